// End-to-end checks with the official `@anthropic-ai/sdk` against hub-gateway's /v1/messages.
// Environment: RELAYHUB_BASE_URL (http://127.0.0.1:PORT, no /v1), RELAYHUB_API_KEY,
// RELAYHUB_MODEL. Arguments: the checks to run (all when none). Prints one JSON object with
// what each check observed; the Python test asserts on it.
import Anthropic from "@anthropic-ai/sdk";
import { checks } from "./checks.mjs";

const baseURL = process.env.RELAYHUB_BASE_URL;
const apiKey = process.env.RELAYHUB_API_KEY;
const model = process.env.RELAYHUB_MODEL;
const client = new Anthropic({ baseURL, apiKey, maxRetries: 0, timeout: 30000 });
const { check, print } = checks();

const messages = [{ role: "user", content: "hello" }];

await check("message", async () => {
  const r = await client.messages.create({ model, max_tokens: 64, messages });
  return { text: r.content.map((b) => b.text || "").join(""), usage: r.usage, id: r.id,
           stop_reason: r.stop_reason };
});

await check("stream", async () => {
  const s = client.messages.stream({ model, max_tokens: 64, messages });
  let text = "", events = 0;
  s.on("text", (t) => { text += t; });
  s.on("streamEvent", () => { events++; });
  const final = await s.finalMessage();
  return { text, events, usage: final.usage, stop_reason: final.stop_reason };
});

await check("stream_raw", async () => {
  const s = await client.messages.create({ model, max_tokens: 64, messages, stream: true });
  const types = [];
  for await (const ev of s) types.push(ev.type);
  return { types };
});

await check("count_tokens", async () => {
  const r = await client.messages.countTokens({ model, messages });
  return { input_tokens: r.input_tokens };
});

await check("abort", async () => {
  const ac = new AbortController();
  const s = await client.messages.create({ model, max_tokens: 1000, messages, stream: true },
                                         { signal: ac.signal });
  let n = 0;
  try {
    for await (const ev of s) {
      if (ev.type === "content_block_delta" && ++n === 3) ac.abort();
    }
  } catch (e) {
    return { aborted: true, after: n, class: e.constructor.name };
  }
  return { aborted: ac.signal.aborted, after: n };
});

await check("bad_key", async () => {
  const bad = new Anthropic({ baseURL, apiKey: "sk-wrong-key", maxRetries: 0 });
  try {
    await bad.messages.create({ model, max_tokens: 8, messages });
    return { rejected: false };
  } catch (e) {
    return { rejected: true, class: e.constructor.name, status: e.status,
             type: e.error && e.error.error && e.error.error.type,
             isAuth: e instanceof Anthropic.AuthenticationError };
  }
});

await check("unknown_model", async () => {
  try {
    await client.messages.create({ model: "no-such-model", max_tokens: 8, messages });
    return { rejected: false };
  } catch (e) {
    return { rejected: true, status: e.status,
             type: e.error && e.error.error && e.error.error.type,
             isNotFound: e instanceof Anthropic.NotFoundError };
  }
});

print();
