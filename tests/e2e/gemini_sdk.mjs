// End-to-end checks with the official `@google/genai` SDK against hub-gateway's
// /v1beta/models/{model}:generateContent. Environment: RELAYHUB_BASE_URL
// (http://127.0.0.1:PORT), RELAYHUB_API_KEY, RELAYHUB_MODEL. Arguments: the checks to run (all
// when none). Prints one JSON object with what each check observed.
import { GoogleGenAI } from "@google/genai";
import { checks } from "./checks.mjs";

const baseUrl = process.env.RELAYHUB_BASE_URL;
const apiKey = process.env.RELAYHUB_API_KEY;
const model = process.env.RELAYHUB_MODEL;
const ai = new GoogleGenAI({ apiKey, httpOptions: { baseUrl, timeout: 30000 } });
const { check, print } = checks();

await check("generate", async () => {
  const r = await ai.models.generateContent({ model, contents: "hello" });
  return { text: r.text, usage: r.usageMetadata };
});

await check("stream", async () => {
  const s = await ai.models.generateContentStream({ model, contents: "hello" });
  let text = "", chunks = 0, usage = null;
  for await (const c of s) {
    chunks++;
    text += c.text || "";
    if (c.usageMetadata) usage = c.usageMetadata;
  }
  return { text, chunks, usage };
});

await check("bad_key", async () => {
  const bad = new GoogleGenAI({ apiKey: "sk-wrong-key", httpOptions: { baseUrl } });
  try {
    await bad.models.generateContent({ model, contents: "x" });
    return { rejected: false };
  } catch (e) {
    return { rejected: true, status: e.status, message: String(e.message) };
  }
});

print();
