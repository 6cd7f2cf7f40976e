// End-to-end checks with the official `openai` SDK against hub-gateway.
// Environment: RELAYHUB_BASE_URL (http://127.0.0.1:PORT/v1), RELAYHUB_API_KEY, RELAYHUB_MODEL.
// Arguments: the checks to run (all when none). Prints one JSON object with what each check
// observed; the Python test asserts on it.
import OpenAI from "openai";
import { checks } from "./checks.mjs";

const baseURL = process.env.RELAYHUB_BASE_URL;
const apiKey = process.env.RELAYHUB_API_KEY;
const model = process.env.RELAYHUB_MODEL;
const client = new OpenAI({ baseURL, apiKey, maxRetries: 0, timeout: 30000 });
const { check, print } = checks();

await check("models", async () => {
  const list = await client.models.list();
  const ids = [];
  for await (const m of list) ids.push(m.id);
  return { ids };
});

await check("chat", async () => {
  const r = await client.chat.completions.create({
    model, messages: [{ role: "user", content: "hello" }] });
  return { content: r.choices[0].message.content, usage: r.usage, id: r.id };
});

await check("stream", async () => {
  const s = await client.chat.completions.create({
    model, stream: true, messages: [{ role: "user", content: "hello" }] });
  let text = "", chunks = 0, usageChunks = 0;
  for await (const c of s) {
    chunks++;
    if (c.usage) usageChunks++;
    if (c.choices && c.choices[0] && c.choices[0].delta && c.choices[0].delta.content)
      text += c.choices[0].delta.content;
  }
  return { text, chunks, usageChunks };
});

await check("stream_with_usage", async () => {
  const s = await client.chat.completions.create({
    model, stream: true, stream_options: { include_usage: true },
    messages: [{ role: "user", content: "hello" }] });
  let usage = null;
  for await (const c of s) if (c.usage) usage = c.usage;
  return { usage };
});

await check("abort", async () => {
  const ac = new AbortController();
  const s = await client.chat.completions.create(
    { model, stream: true, messages: [{ role: "user", content: "long" }] },
    { signal: ac.signal });
  let n = 0;
  try {
    for await (const c of s) {
      if (++n === 3) ac.abort();
    }
  } catch (e) {
    return { aborted: true, after: n, class: e.constructor.name };
  }
  // some versions end the iteration quietly on abort
  return { aborted: ac.signal.aborted, after: n };
});

await check("bad_key", async () => {
  const bad = new OpenAI({ baseURL, apiKey: "sk-wrong-key", maxRetries: 0 });
  try {
    await bad.chat.completions.create({ model, messages: [{ role: "user", content: "x" }] });
    return { rejected: false };
  } catch (e) {
    return { rejected: true, class: e.constructor.name, status: e.status,
             code: e.code, isAuth: e instanceof OpenAI.AuthenticationError };
  }
});

await check("unknown_model", async () => {
  try {
    await client.chat.completions.create({ model: "no-such-model",
                                           messages: [{ role: "user", content: "x" }] });
    return { rejected: false };
  } catch (e) {
    return { rejected: true, status: e.status, code: e.code,
             isNotFound: e instanceof OpenAI.NotFoundError };
  }
});

print();
