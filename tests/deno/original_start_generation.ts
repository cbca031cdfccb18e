// TEST FIXTURE, NOT SHIPPED: a faithful copy of the ORIGINAL start-generation edge function,
// which stays deployed on hosted projects (hosted Supabase cannot route /functions/v1/* to
// our container). Its imports are rewritten to pinned npm: specifiers (deno.land and esm.sh
// are unreachable here); its calls are the original's, exactly (issue 11 acceptance):
//
//   1. verify the user (auth.getUser with the caller's token);
//   2. look up `models` by `replicate_id` with the USER's client (no error check);
//   3. insert the generation with the SERVICE-ROLE client: {user_id, prompt, negative_prompt,
//      model (the model's name), style, width, height, steps, guidance_scale, status: 'pending'};
//   4. rpc('enqueue_job', {p_job_type: 'generate-image', p_payload: {generation_id, user_id,
//      prompt, negative_prompt, model_id, model_version, width, height, num_inference_steps,
//      guidance_scale, seed, source_image_url, strength}, p_priority: 0, p_max_attempts: 3})
//      with the service-role client, model_version straight from the request;
//   5. update image_generations set status = 'queued'.
//
// It validates nothing and holds no limit: whatever it is sent reaches the database through
// the service role. The tests prove that the database alone keeps such requests from being
// stored as runnable generations or paid for.

import { createClient } from "npm:@supabase/supabase-js@2.119.0";

const corsHeaders = {
  "Access-Control-Allow-Origin": "*",
  "Access-Control-Allow-Headers": "authorization, x-client-info, apikey, content-type",
};

Deno.serve(async (req) => {
  if (req.method === "OPTIONS") {
    return new Response("ok", { headers: corsHeaders });
  }

  try {
    const supabaseClient = createClient(
      Deno.env.get("SUPABASE_URL") ?? "",
      Deno.env.get("SUPABASE_ANON_KEY") ?? "",
      { global: { headers: { Authorization: req.headers.get("Authorization")! } } },
    );
    const supabaseAdmin = createClient(
      Deno.env.get("SUPABASE_URL") ?? "",
      Deno.env.get("SUPABASE_SERVICE_ROLE_KEY") ?? "",
    );

    const { data: { user }, error: userError } = await supabaseClient.auth.getUser();
    if (userError || !user) {
      return new Response(JSON.stringify({ error: "Unauthorized" }), {
        headers: { ...corsHeaders, "Content-Type": "application/json" },
        status: 401,
      });
    }

    const {
      prompt,
      negative_prompt,
      model_id,
      model_version,
      width,
      height,
      num_inference_steps,
      guidance_scale,
      seed,
      source_image_url,
      strength,
      style,
    } = await req.json();

    if (!prompt || !model_id) {
      throw new Error("Missing required fields: prompt and model_id");
    }

    console.log(`Starting generation for user ${user.id} with model ${model_id}`);

    const { data: model } = await supabaseClient
      .from("models")
      .select("*")
      .eq("replicate_id", model_id)
      .single();

    const finalWidth = width || model?.default_width || 1024;
    const finalHeight = height || model?.default_height || 1024;
    const finalSteps = num_inference_steps || model?.default_steps || 30;
    const finalGuidance = guidance_scale || model?.default_guidance_scale || 7.5;

    const { data: generation, error: genError } = await supabaseAdmin
      .from("image_generations")
      .insert({
        user_id: user.id,
        prompt,
        negative_prompt,
        model: model?.name || model_id.split("/").pop(),
        style,
        width: finalWidth,
        height: finalHeight,
        steps: finalSteps,
        guidance_scale: finalGuidance,
        status: "pending",
      })
      .select()
      .single();

    if (genError) {
      console.error("Error creating generation:", genError);
      throw new Error(`Failed to create generation: ${genError.message}`);
    }

    const { data: jobId, error: jobError } = await supabaseAdmin.rpc("enqueue_job", {
      p_job_type: "generate-image",
      p_payload: {
        generation_id: generation.id,
        user_id: user.id,
        prompt,
        negative_prompt,
        model_id,
        model_version,
        width: finalWidth,
        height: finalHeight,
        num_inference_steps: finalSteps,
        guidance_scale: finalGuidance,
        seed,
        source_image_url,
        strength,
      },
      p_priority: 0,
      p_max_attempts: 3,
    });

    if (jobError) {
      console.error("Error enqueueing job:", jobError);
      await supabaseAdmin
        .from("image_generations")
        .update({ status: "failed", error_message: "Failed to enqueue job" })
        .eq("id", generation.id);
      throw new Error(`Failed to enqueue job: ${jobError.message}`);
    }

    await supabaseAdmin
      .from("image_generations")
      .update({ status: "queued" })
      .eq("id", generation.id);

    console.log(`Generation ${generation.id} queued as job ${jobId}`);

    return new Response(
      JSON.stringify({
        success: true,
        generation_id: generation.id,
        job_id: jobId,
        status: "queued",
        message: "Image generation started. You will be notified when complete.",
      }),
      { headers: { ...corsHeaders, "Content-Type": "application/json" }, status: 200 },
    );
  } catch (error) {
    console.error("Error in start-generation:", error);
    return new Response(
      JSON.stringify({ error: error instanceof Error ? error.message : String(error) }),
      { headers: { ...corsHeaders, "Content-Type": "application/json" }, status: 400 },
    );
  }
});
