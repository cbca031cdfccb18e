// The local stack's edge-runtime shim: runs one function module the way the hosted runtime
// does, but on the 127.0.0.1 port the stack chose. The module calls Deno.serve(handler) (or
// Deno.serve(options, handler)) as it would on Supabase; the shim binds that handler to
// DEVSTACK_EDGE_PORT whatever options the module passed, then imports DEVSTACK_EDGE_MAIN.

const port = Number(Deno.env.get("DEVSTACK_EDGE_PORT"));
const main = Deno.env.get("DEVSTACK_EDGE_MAIN");
if (!Number.isInteger(port) || port <= 0 || !main) {
  console.error("serve.ts: DEVSTACK_EDGE_PORT and DEVSTACK_EDGE_MAIN must be set");
  Deno.exit(2);
}

type Handler = (request: Request, info: Deno.ServeHandlerInfo) => Response | Promise<Response>;
const serve = Deno.serve.bind(Deno);
let served = false;

// deno-lint-ignore no-explicit-any
(Deno as any).serve = (...args: any[]) => {
  const handler: Handler | undefined =
    args.find((arg) => typeof arg === "function") ?? args[0]?.handler;
  if (!handler) throw new TypeError("Deno.serve needs a handler");
  if (served) throw new Error("the local edge runtime serves one Deno.serve per function");
  served = true;
  return serve({
    hostname: "127.0.0.1",
    port,
    onListen: () => console.log(`edge function listening on 127.0.0.1:${port}`),
  }, handler);
};

await import(main);
