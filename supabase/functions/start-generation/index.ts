// start-generation for hosted Supabase projects (deploy: `supabase functions deploy
// start-generation --use-api`). The same contract as functions_compat's start-generation
// (SPEC section 5): POST a JSON body with the user's JWT, get at once
//   200 {"success": true, "generation_id", "job_id", "status": "queued", "message": ...}
// or {"error": "..."} with 400 (bad input), 401 (no or invalid token), 429 (too many
// generations in flight), 413 (body over 256 KiB), 405 (not POST), 500 (anything else).
// OPTIONS answers `ok`; every response carries the original's CORS headers.
//
// The database is the boundary: this function holds no rule and no service key. It calls
// `public.request_generation(p_request jsonb)` with the caller's own JWT; the database
// decides the user from auth.uid(), validates the body against the catalogue and the limits,
// and creates the generation and its job in one transaction. PostgREST's answer is mapped
// to the contract's statuses (SQLSTATE PT429 -> 429, 401/403 -> 401, other 4xx -> 400).

import { createClient } from "npm:@supabase/supabase-js@2.119.0";

const corsHeaders: Record<string, string> = {
  "Access-Control-Allow-Origin": "*",
  "Access-Control-Allow-Headers": "authorization, x-client-info, apikey, content-type",
};
const STARTED_MESSAGE = "Image generation started. You will be notified when complete.";
const MAX_BODY_BYTES = 256 * 1024;
const MAX_TOKEN_CHARS = 16 * 1024;

class HttpError extends Error {
  constructor(readonly status: number, message: string) {
    super(message);
  }
}

function json(body: unknown, status = 200): Response {
  return new Response(JSON.stringify(body), {
    status,
    headers: { ...corsHeaders, "Content-Type": "application/json" },
  });
}

function bearerToken(req: Request): string {
  const header = req.headers.get("Authorization")?.trim();
  if (!header) throw new HttpError(401, "Missing authorization header");
  const [scheme, token, ...rest] = header.split(/\s+/);
  if (scheme.toLowerCase() !== "bearer" || !token || rest.length || token.length > MAX_TOKEN_CHARS) {
    throw new HttpError(401, "Invalid authorization header: expected 'Bearer <token>'");
  }
  return token;
}

async function readJsonObject(req: Request): Promise<Record<string, unknown>> {
  const declared = Number(req.headers.get("Content-Length") ?? "0");
  const tooLarge = new HttpError(413, `Request body too large (limit ${MAX_BODY_BYTES} bytes)`);
  if (declared > MAX_BODY_BYTES) throw tooLarge;
  const chunks: Uint8Array[] = [];
  let size = 0;
  if (req.body) {
    for await (const chunk of req.body) {
      size += chunk.byteLength;
      if (size > MAX_BODY_BYTES) throw tooLarge;
      chunks.push(chunk);
    }
  }
  const bytes = new Uint8Array(size);
  let offset = 0;
  for (const chunk of chunks) {
    bytes.set(chunk, offset);
    offset += chunk.byteLength;
  }
  const text = new TextDecoder().decode(bytes);
  if (!text.trim()) throw new HttpError(400, "Request body must be a JSON object");
  let body: unknown;
  try {
    body = JSON.parse(text);
  } catch {
    throw new HttpError(400, "Invalid JSON in request body");
  }
  if (typeof body !== "object" || body === null || Array.isArray(body)) {
    throw new HttpError(400, "Request body must be a JSON object");
  }
  return body as Record<string, unknown>;
}

type RpcError = { code?: string; message?: string };

function rpcFailure(error: RpcError, status: number): HttpError {
  const message = error.message || "Request refused";
  if (error.code === "PT429" || status === 429) return new HttpError(429, message);
  if (status === 401 || status === 403) {
    // PGRST3xx: the token itself (expired, bad signature); otherwise no user behind it.
    const jwtProblem = error.code?.startsWith("PGRST3") && error.message;
    return new HttpError(401, jwtProblem || "A signed-in user's access token is required");
  }
  if (status >= 400 && status < 500 && status !== 404) return new HttpError(400, message);
  console.error(`request_generation failed: HTTP ${status} ${error.code ?? ""} ${message}`);
  return new HttpError(500, "Internal server error");
}

async function startGeneration(req: Request): Promise<Response> {
  if (req.method !== "POST") throw new HttpError(405, `Method ${req.method} not allowed; use POST`);
  const token = bearerToken(req);
  const body = await readJsonObject(req);
  const url = Deno.env.get("SUPABASE_URL");
  const anonKey = Deno.env.get("SUPABASE_ANON_KEY");
  if (!url || !anonKey) {
    console.error("start-generation: SUPABASE_URL or SUPABASE_ANON_KEY is not set");
    throw new HttpError(500, "Internal server error");
  }
  const supabase = createClient(url, anonKey, {
    global: { headers: { Authorization: `Bearer ${token}` } },
    auth: { persistSession: false, autoRefreshToken: false, detectSessionInUrl: false },
  });
  const { data, error, status } = await supabase.rpc("request_generation", { p_request: body });
  if (error) throw rpcFailure(error, status);
  const started = (data ?? {}) as { generation_id?: string; job_id?: string };
  if (!started.generation_id || !started.job_id) {
    console.error(`request_generation returned ${JSON.stringify(data)}`);
    throw new HttpError(500, "Internal server error");
  }
  return json({
    success: true,
    generation_id: started.generation_id,
    job_id: started.job_id,
    status: "queued",
    message: STARTED_MESSAGE,
  });
}

Deno.serve(async (req: Request): Promise<Response> => {
  if (req.method === "OPTIONS") return new Response("ok", { headers: corsHeaders });
  try {
    return await startGeneration(req);
  } catch (err) {
    if (err instanceof HttpError) return json({ error: err.message }, err.status);
    console.error(`start-generation failed: ${err instanceof Error ? err.name : typeof err}`);
    return json({ error: "Internal server error" }, 500);
  }
});
