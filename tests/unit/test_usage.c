/* Unit tests for lib/usage: token figures read from vendor-shaped OpenAI, Azure OpenAI,
 * Anthropic, Gemini and Bedrock streams (SSE and AWS event streams) and bodies, the same
 * whatever the chunking and line endings; the usage-only chunk's offsets (cut it out and the
 * stream stays valid, without usage); streams cut short; Bedrock's invoke headers; missing
 * usage, limits, malformed frames and events, error events; the billing figures rule
 * (usage_bill). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "eventstream.h"
#include "usage.h"

/* ---- Vendor-shaped samples (shapes from OpenAI's API reference and Azure's recordings) ---- */

/* OpenAI chat.completions, stream_options.include_usage: 19 in (6 cached), 10 out;
 * content "" + "Hello" + " wörld" + " \u4e16\u754c!" = 15 code points */
static const char CHAT_USAGE[] =
    "data: {\"id\":\"chatcmpl-B9MBs8CjcvOU2jLn4n570S5qMJKcT\",\"object\":\"chat.completion.chunk\""
    ",\"created\":1741569952,\"model\":\"gpt-4o-2024-08-06\",\"service_tier\":\"default\",\"system"
    "_fingerprint\":\"fp_f9f4fb6dbf\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\","
    "\"content\":\"\",\"refusal\":null},\"logprobs\":null,\"finish_reason\":null}],\"usage\":null,"
    "\"obfuscation\":\"4W8aXk\"}\n"
    "\n"
    "data: {\"id\":\"chatcmpl-B9MBs8CjcvOU2jLn4n570S5qMJKcT\",\"object\":\"chat.completion.chunk\""
    ",\"created\":1741569952,\"model\":\"gpt-4o-2024-08-06\",\"service_tier\":\"default\",\"system"
    "_fingerprint\":\"fp_f9f4fb6dbf\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hello\"},"
    "\"logprobs\":null,\"finish_reason\":null}],\"usage\":null,\"obfuscation\":\"qT\"}\n"
    "\n"
    ": ping\n"
    "\n"
    "data: {\"id\":\"chatcmpl-B9MBs8CjcvOU2jLn4n570S5qMJKcT\",\"object\":\"chat.completion.chunk\""
    ",\"created\":1741569952,\"model\":\"gpt-4o-2024-08-06\",\"service_tier\":\"default\",\"system"
    "_fingerprint\":\"fp_f9f4fb6dbf\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\" w"
    "\xc3\xb6rld\"},\"logprobs\":null,\"finish_reason\":null}],\"usage\":null,\"obfuscation\":\"Zz"
    "0\"}\n"
    "\n"
    "data: {\"id\":\"chatcmpl-B9MBs8CjcvOU2jLn4n570S5qMJKcT\",\"object\":\"chat.completion.chunk\""
    ",\"created\":1741569952,\"model\":\"gpt-4o-2024-08-06\",\"service_tier\":\"default\",\"system"
    "_fingerprint\":\"fp_f9f4fb6dbf\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\" \\u4e16"
    "\\u754c!\"},\"logprobs\":null,\"finish_reason\":null}],\"usage\":null,\"obfuscation\":\"k\"}"
    "\n"
    "\n"
    "data: {\"id\":\"chatcmpl-B9MBs8CjcvOU2jLn4n570S5qMJKcT\",\"object\":\"chat.completion.chunk\""
    ",\"created\":1741569952,\"model\":\"gpt-4o-2024-08-06\",\"service_tier\":\"default\",\"system"
    "_fingerprint\":\"fp_f9f4fb6dbf\",\"choices\":[{\"index\":0,\"delta\":{},\"logprobs\":null,\"f"
    "inish_reason\":\"stop\"}],\"usage\":null,\"obfuscation\":\"p1Q\"}\n"
    "\n"
    "data: {\"id\":\"chatcmpl-B9MBs8CjcvOU2jLn4n570S5qMJKcT\",\"object\":\"chat.completion.chunk\""
    ",\"created\":1741569952,\"model\":\"gpt-4o-2024-08-06\",\"service_tier\":\"default\",\"system"
    "_fingerprint\":\"fp_f9f4fb6dbf\",\"choices\":[],\"usage\":{\"prompt_tokens\":19,\"completion_"
    "tokens\":10,\"total_tokens\":29,\"prompt_tokens_details\":{\"cached_tokens\":6,\"audio_tokens"
    "\":0},\"completion_tokens_details\":{\"reasoning_tokens\":0,\"audio_tokens\":0,\"accepted_pre"
    "diction_tokens\":0,\"rejected_prediction_tokens\":0}},\"obfuscation\":\"aB3dE\"}\n"
    "\n"
    "data: [DONE]\n"
    "\n";

/* The same stream without include_usage: no usage anywhere */
static const char CHAT_NO_USAGE[] =
    "data: {\"id\":\"chatcmpl-B9MBs8CjcvOU2jLn4n570S5qMJKcT\",\"object\":\"chat.completion.chunk\""
    ",\"created\":1741569952,\"model\":\"gpt-4o-2024-08-06\",\"service_tier\":\"default\",\"system"
    "_fingerprint\":\"fp_f9f4fb6dbf\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\","
    "\"content\":\"\",\"refusal\":null},\"logprobs\":null,\"finish_reason\":null}],\"obfuscation\""
    ":\"4W8aXk\"}\n"
    "\n"
    "data: {\"id\":\"chatcmpl-B9MBs8CjcvOU2jLn4n570S5qMJKcT\",\"object\":\"chat.completion.chunk\""
    ",\"created\":1741569952,\"model\":\"gpt-4o-2024-08-06\",\"service_tier\":\"default\",\"system"
    "_fingerprint\":\"fp_f9f4fb6dbf\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hello\"},"
    "\"logprobs\":null,\"finish_reason\":null}],\"obfuscation\":\"qT\"}\n"
    "\n"
    ": ping\n"
    "\n"
    "data: {\"id\":\"chatcmpl-B9MBs8CjcvOU2jLn4n570S5qMJKcT\",\"object\":\"chat.completion.chunk\""
    ",\"created\":1741569952,\"model\":\"gpt-4o-2024-08-06\",\"service_tier\":\"default\",\"system"
    "_fingerprint\":\"fp_f9f4fb6dbf\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\" w"
    "\xc3\xb6rld\"},\"logprobs\":null,\"finish_reason\":null}],\"obfuscation\":\"Zz0\"}\n"
    "\n"
    "data: {\"id\":\"chatcmpl-B9MBs8CjcvOU2jLn4n570S5qMJKcT\",\"object\":\"chat.completion.chunk\""
    ",\"created\":1741569952,\"model\":\"gpt-4o-2024-08-06\",\"service_tier\":\"default\",\"system"
    "_fingerprint\":\"fp_f9f4fb6dbf\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\" \\u4e16"
    "\\u754c!\"},\"logprobs\":null,\"finish_reason\":null}],\"obfuscation\":\"k\"}\n"
    "\n"
    "data: {\"id\":\"chatcmpl-B9MBs8CjcvOU2jLn4n570S5qMJKcT\",\"object\":\"chat.completion.chunk\""
    ",\"created\":1741569952,\"model\":\"gpt-4o-2024-08-06\",\"service_tier\":\"default\",\"system"
    "_fingerprint\":\"fp_f9f4fb6dbf\",\"choices\":[{\"index\":0,\"delta\":{},\"logprobs\":null,\"f"
    "inish_reason\":\"stop\"}],\"obfuscation\":\"p1Q\"}\n"
    "\n"
    "data: [DONE]\n"
    "\n";

/* OpenAI tool call stream: arguments {"location": "Paris"} = 21 code points;
 * 1117 in (1024 cached), 17 out */
static const char CHAT_TOOLS[] =
    "data: {\"id\":\"chatcmpl-Cx1\",\"object\":\"chat.completion.chunk\",\"created\":1741569952,\""
    "model\":\"gpt-4o-2024-08-06\",\"service_tier\":\"default\",\"system_fingerprint\":\"fp_f9f4fb"
    "6dbf\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":null,\"tool_ca"
    "lls\":[{\"index\":0,\"id\":\"call_DdmO9pD3xa9XTPNJ32zg2hcA\",\"type\":\"function\",\"function"
    "\":{\"name\":\"get_weather\",\"arguments\":\"\"}}],\"refusal\":null},\"logprobs\":null,\"fini"
    "sh_reason\":null}],\"usage\":null}\n"
    "\n"
    "data: {\"id\":\"chatcmpl-Cx1\",\"object\":\"chat.completion.chunk\",\"created\":1741569952,\""
    "model\":\"gpt-4o-2024-08-06\",\"service_tier\":\"default\",\"system_fingerprint\":\"fp_f9f4fb"
    "6dbf\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"argu"
    "ments\":\"{\\\"lo\"}}]},\"logprobs\":null,\"finish_reason\":null}],\"usage\":null}\n"
    "\n"
    "data: {\"id\":\"chatcmpl-Cx1\",\"object\":\"chat.completion.chunk\",\"created\":1741569952,\""
    "model\":\"gpt-4o-2024-08-06\",\"service_tier\":\"default\",\"system_fingerprint\":\"fp_f9f4fb"
    "6dbf\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"argu"
    "ments\":\"cation\\\":\"}}]},\"logprobs\":null,\"finish_reason\":null}],\"usage\":null}\n"
    "\n"
    "data: {\"id\":\"chatcmpl-Cx1\",\"object\":\"chat.completion.chunk\",\"created\":1741569952,\""
    "model\":\"gpt-4o-2024-08-06\",\"service_tier\":\"default\",\"system_fingerprint\":\"fp_f9f4fb"
    "6dbf\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"argu"
    "ments\":\" \\\"Paris\\\"}\"}}]},\"logprobs\":null,\"finish_reason\":null}],\"usage\":null}\n"
    "\n"
    "data: {\"id\":\"chatcmpl-Cx1\",\"object\":\"chat.completion.chunk\",\"created\":1741569952,\""
    "model\":\"gpt-4o-2024-08-06\",\"service_tier\":\"default\",\"system_fingerprint\":\"fp_f9f4fb"
    "6dbf\",\"choices\":[{\"index\":0,\"delta\":{},\"logprobs\":null,\"finish_reason\":\"tool_call"
    "s\"}],\"usage\":null}\n"
    "\n"
    "data: {\"id\":\"chatcmpl-Cx1\",\"object\":\"chat.completion.chunk\",\"created\":1741569952,\""
    "model\":\"gpt-4o-2024-08-06\",\"service_tier\":\"default\",\"system_fingerprint\":\"fp_f9f4fb"
    "6dbf\",\"choices\":[],\"usage\":{\"prompt_tokens\":1117,\"completion_tokens\":17,\"total_toke"
    "ns\":1134,\"prompt_tokens_details\":{\"cached_tokens\":1024,\"audio_tokens\":0},\"completion_"
    "tokens_details\":{\"reasoning_tokens\":0,\"audio_tokens\":0,\"accepted_prediction_tokens\":0,"
    "\"rejected_prediction_tokens\":0}}}\n"
    "\n"
    "data: [DONE]\n"
    "\n";

/* Azure OpenAI chat stream: prompt_filter_results chunk with "choices": [] and no
 * usage first, content_filter_results on choices, an asynchronous-filter chunk
 * (content_filter_offsets), then the include_usage chunk: 25 in, 4 out;
 * content "Bonjour" + " à tous" = 14 code points */
static const char AZURE_CHAT[] =
    "data: {\"choices\":[],\"created\":0,\"id\":\"\",\"model\":\"\",\"object\":\"\",\"prompt_filte"
    "r_results\":[{\"prompt_index\":0,\"content_filter_results\":{\"hate\":{\"filtered\":false,\"s"
    "everity\":\"safe\"},\"self_harm\":{\"filtered\":false,\"severity\":\"safe\"},\"sexual\":{\"fi"
    "ltered\":false,\"severity\":\"safe\"},\"violence\":{\"filtered\":false,\"severity\":\"safe\"}"
    ",\"jailbreak\":{\"filtered\":false,\"detected\":false}}}]}\n"
    "\n"
    "data: {\"choices\":[{\"content_filter_results\":{},\"delta\":{\"content\":\"\",\"refusal\":nu"
    "ll,\"role\":\"assistant\"},\"finish_reason\":null,\"index\":0,\"logprobs\":null}],\"created\""
    ":1731012345,\"id\":\"chatcmpl-AR8fQ2\",\"model\":\"gpt-4o-2024-11-20\",\"object\":\"chat.comp"
    "letion.chunk\",\"system_fingerprint\":\"fp_b705f0c291\",\"usage\":null}\n"
    "\n"
    "data: {\"choices\":[{\"content_filter_results\":{\"hate\":{\"filtered\":false,\"severity\":\""
    "safe\"},\"self_harm\":{\"filtered\":false,\"severity\":\"safe\"},\"sexual\":{\"filtered\":fal"
    "se,\"severity\":\"safe\"},\"violence\":{\"filtered\":false,\"severity\":\"safe\"}},\"delta\":"
    "{\"content\":\"Bonjour\"},\"finish_reason\":null,\"index\":0,\"logprobs\":null}],\"created\":"
    "1731012345,\"id\":\"chatcmpl-AR8fQ2\",\"model\":\"gpt-4o-2024-11-20\",\"object\":\"chat.compl"
    "etion.chunk\",\"system_fingerprint\":\"fp_b705f0c291\",\"usage\":null}\n"
    "\n"
    "data: {\"choices\":[{\"content_filter_results\":{\"hate\":{\"filtered\":false,\"severity\":\""
    "safe\"},\"self_harm\":{\"filtered\":false,\"severity\":\"safe\"},\"sexual\":{\"filtered\":fal"
    "se,\"severity\":\"safe\"},\"violence\":{\"filtered\":false,\"severity\":\"safe\"}},\"delta\":"
    "{\"content\":\" \xc3\xa0 tous\"},\"finish_reason\":null,\"index\":0,\"logprobs\":null}],\"cre"
    "ated\":1731012345,\"id\":\"chatcmpl-AR8fQ2\",\"model\":\"gpt-4o-2024-11-20\",\"object\":\"cha"
    "t.completion.chunk\",\"system_fingerprint\":\"fp_b705f0c291\",\"usage\":null}\n"
    "\n"
    "data: {\"choices\":[{\"content_filter_results\":{},\"delta\":{},\"finish_reason\":\"stop\",\""
    "index\":0,\"logprobs\":null}],\"created\":1731012345,\"id\":\"chatcmpl-AR8fQ2\",\"model\":\"g"
    "pt-4o-2024-11-20\",\"object\":\"chat.completion.chunk\",\"system_fingerprint\":\"fp_b705f0c29"
    "1\",\"usage\":null}\n"
    "\n"
    "data: {\"choices\":[{\"content_filter_offsets\":{\"check_offset\":0,\"start_offset\":0,\"end_"
    "offset\":14},\"content_filter_results\":{\"hate\":{\"filtered\":false,\"severity\":\"safe\"},"
    "\"self_harm\":{\"filtered\":false,\"severity\":\"safe\"},\"sexual\":{\"filtered\":false,\"sev"
    "erity\":\"safe\"},\"violence\":{\"filtered\":false,\"severity\":\"safe\"}},\"finish_reason\":"
    "null,\"index\":0}],\"created\":0,\"id\":\"\",\"model\":\"\",\"object\":\"\"}\n"
    "\n"
    "data: {\"choices\":[],\"created\":1731012345,\"id\":\"chatcmpl-AR8fQ2\",\"model\":\"gpt-4o-20"
    "24-11-20\",\"object\":\"chat.completion.chunk\",\"system_fingerprint\":\"fp_b705f0c291\",\"us"
    "age\":{\"completion_tokens\":4,\"completion_tokens_details\":{\"accepted_prediction_tokens\":"
    "0,\"audio_tokens\":0,\"reasoning_tokens\":0,\"rejected_prediction_tokens\":0},\"prompt_tokens"
    "\":25,\"prompt_tokens_details\":{\"audio_tokens\":0,\"cached_tokens\":0},\"total_tokens\":29}"
    "}\n"
    "\n"
    "data: [DONE]\n"
    "\n";

/* OpenAI completions stream with include_usage: 5 in, 7 out; text
 * "\n\nThis" + " is" + " a test." = 17 code points */
static const char COMPLETIONS[] =
    "data: {\"id\":\"cmpl-7iA7iJjj8V2zOkCGvWF2hAkDWBQZe\",\"object\":\"text_completion\",\"created"
    "\":1690759702,\"choices\":[{\"text\":\"\\n\\nThis\",\"index\":0,\"logprobs\":null,\"finish_re"
    "ason\":null}],\"model\":\"gpt-3.5-turbo-instruct\",\"system_fingerprint\":null,\"usage\":null"
    "}\n"
    "\n"
    "data: {\"id\":\"cmpl-7iA7iJjj8V2zOkCGvWF2hAkDWBQZe\",\"object\":\"text_completion\",\"created"
    "\":1690759702,\"choices\":[{\"text\":\" is\",\"index\":0,\"logprobs\":null,\"finish_reason\":"
    "null}],\"model\":\"gpt-3.5-turbo-instruct\",\"system_fingerprint\":null,\"usage\":null}\n"
    "\n"
    "data: {\"id\":\"cmpl-7iA7iJjj8V2zOkCGvWF2hAkDWBQZe\",\"object\":\"text_completion\",\"created"
    "\":1690759702,\"choices\":[{\"text\":\" a test.\",\"index\":0,\"logprobs\":null,\"finish_reas"
    "on\":null}],\"model\":\"gpt-3.5-turbo-instruct\",\"system_fingerprint\":null,\"usage\":null}"
    "\n"
    "\n"
    "data: {\"id\":\"cmpl-7iA7iJjj8V2zOkCGvWF2hAkDWBQZe\",\"object\":\"text_completion\",\"created"
    "\":1690759702,\"choices\":[{\"text\":\"\",\"index\":0,\"logprobs\":null,\"finish_reason\":\"l"
    "ength\"}],\"model\":\"gpt-3.5-turbo-instruct\",\"system_fingerprint\":null,\"usage\":null}\n"
    "\n"
    "data: {\"id\":\"cmpl-7iA7iJjj8V2zOkCGvWF2hAkDWBQZe\",\"object\":\"text_completion\",\"created"
    "\":1690759702,\"choices\":[],\"model\":\"gpt-3.5-turbo-instruct\",\"system_fingerprint\":null"
    ",\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":7,\"total_tokens\":12}}\n"
    "\n"
    "data: [DONE]\n"
    "\n";

/* OpenAI /v1/responses stream: typed events, no [DONE]; response.completed
 * carries usage 37 in (32 cached), 11 out; deltas "Hi" + " there ☃" = 10 code points */
static const char RESPONSES[] =
    "event: response.created\n"
    "data: {\"type\":\"response.created\",\"sequence_number\":0,\"response\":{\"id\":\"resp_67ccd2"
    "bed1ec8190b14f964abc0542670bb6a6b452d3795b\",\"object\":\"response\",\"created_at\":174147654"
    "2,\"status\":\"in_progress\",\"background\":false,\"error\":null,\"incomplete_details\":null,"
    "\"instructions\":null,\"max_output_tokens\":null,\"model\":\"gpt-4.1-2025-04-14\",\"output\":"
    "[],\"parallel_tool_calls\":true,\"previous_response_id\":null,\"reasoning\":{\"effort\":null,"
    "\"summary\":null},\"store\":true,\"temperature\":1.0,\"text\":{\"format\":{\"type\":\"text\"}"
    "},\"tool_choice\":\"auto\",\"tools\":[],\"top_p\":1.0,\"truncation\":\"disabled\",\"usage\":n"
    "ull,\"user\":null,\"metadata\":{}}}\n"
    "\n"
    "event: response.in_progress\n"
    "data: {\"type\":\"response.in_progress\",\"sequence_number\":1,\"response\":{\"id\":\"resp_67"
    "ccd2bed1ec8190b14f964abc0542670bb6a6b452d3795b\",\"object\":\"response\",\"created_at\":17414"
    "76542,\"status\":\"in_progress\",\"background\":false,\"error\":null,\"incomplete_details\":n"
    "ull,\"instructions\":null,\"max_output_tokens\":null,\"model\":\"gpt-4.1-2025-04-14\",\"outpu"
    "t\":[],\"parallel_tool_calls\":true,\"previous_response_id\":null,\"reasoning\":{\"effort\":n"
    "ull,\"summary\":null},\"store\":true,\"temperature\":1.0,\"text\":{\"format\":{\"type\":\"tex"
    "t\"}},\"tool_choice\":\"auto\",\"tools\":[],\"top_p\":1.0,\"truncation\":\"disabled\",\"usage"
    "\":null,\"user\":null,\"metadata\":{}}}\n"
    "\n"
    "event: response.output_item.added\n"
    "data: {\"type\":\"response.output_item.added\",\"sequence_number\":2,\"output_index\":0,\"ite"
    "m\":{\"id\":\"msg_67ccd2bf17f0819081ff3bb2cf6508e60bb6a6b452d3795b\",\"type\":\"message\",\"s"
    "tatus\":\"in_progress\",\"role\":\"assistant\",\"content\":[]}}\n"
    "\n"
    "event: response.content_part.added\n"
    "data: {\"type\":\"response.content_part.added\",\"sequence_number\":3,\"item_id\":\"msg_67ccd"
    "2bf17f0819081ff3bb2cf6508e60bb6a6b452d3795b\",\"output_index\":0,\"content_index\":0,\"part\""
    ":{\"type\":\"output_text\",\"annotations\":[],\"logprobs\":[],\"text\":\"\"}}\n"
    "\n"
    "event: response.output_text.delta\n"
    "data: {\"type\":\"response.output_text.delta\",\"sequence_number\":4,\"item_id\":\"msg_67ccd2"
    "bf17f0819081ff3bb2cf6508e60bb6a6b452d3795b\",\"output_index\":0,\"content_index\":0,\"delta\""
    ":\"Hi\",\"logprobs\":[],\"obfuscation\":\"Wq9hP1rZ3xPe\"}\n"
    "\n"
    "event: response.output_text.delta\n"
    "data: {\"type\":\"response.output_text.delta\",\"sequence_number\":5,\"item_id\":\"msg_67ccd2"
    "bf17f0819081ff3bb2cf6508e60bb6a6b452d3795b\",\"output_index\":0,\"content_index\":0,\"delta\""
    ":\" there \xe2\x98\x83\",\"logprobs\":[],\"obfuscation\":\"d1\"}\n"
    "\n"
    "event: response.output_text.done\n"
    "data: {\"type\":\"response.output_text.done\",\"sequence_number\":6,\"item_id\":\"msg_67ccd2b"
    "f17f0819081ff3bb2cf6508e60bb6a6b452d3795b\",\"output_index\":0,\"content_index\":0,\"text\":"
    "\"Hi there \xe2\x98\x83\",\"logprobs\":[]}\n"
    "\n"
    "event: response.content_part.done\n"
    "data: {\"type\":\"response.content_part.done\",\"sequence_number\":7,\"item_id\":\"msg_67ccd2"
    "bf17f0819081ff3bb2cf6508e60bb6a6b452d3795b\",\"output_index\":0,\"content_index\":0,\"part\":"
    "{\"type\":\"output_text\",\"annotations\":[],\"logprobs\":[],\"text\":\"Hi there \xe2\x98\x83"
    "\"}}\n"
    "\n"
    "event: response.output_item.done\n"
    "data: {\"type\":\"response.output_item.done\",\"sequence_number\":8,\"output_index\":0,\"item"
    "\":{\"id\":\"msg_67ccd2bf17f0819081ff3bb2cf6508e60bb6a6b452d3795b\",\"type\":\"message\",\"st"
    "atus\":\"completed\",\"role\":\"assistant\",\"content\":[{\"type\":\"output_text\",\"annotati"
    "ons\":[],\"logprobs\":[],\"text\":\"Hi there \xe2\x98\x83\"}]}}\n"
    "\n"
    "event: response.completed\n"
    "data: {\"type\":\"response.completed\",\"sequence_number\":9,\"response\":{\"id\":\"resp_67cc"
    "d2bed1ec8190b14f964abc0542670bb6a6b452d3795b\",\"object\":\"response\",\"created_at\":1741476"
    "542,\"status\":\"completed\",\"background\":false,\"error\":null,\"incomplete_details\":null,"
    "\"instructions\":null,\"max_output_tokens\":null,\"model\":\"gpt-4.1-2025-04-14\",\"output\":"
    "[{\"id\":\"msg_67ccd2bf17f0819081ff3bb2cf6508e60bb6a6b452d3795b\",\"type\":\"message\",\"stat"
    "us\":\"completed\",\"role\":\"assistant\",\"content\":[{\"type\":\"output_text\",\"annotation"
    "s\":[],\"logprobs\":[],\"text\":\"Hi there \xe2\x98\x83\"}]}],\"parallel_tool_calls\":true,\""
    "previous_response_id\":null,\"reasoning\":{\"effort\":null,\"summary\":null},\"store\":true,"
    "\"temperature\":1.0,\"text\":{\"format\":{\"type\":\"text\"}},\"tool_choice\":\"auto\",\"tool"
    "s\":[],\"top_p\":1.0,\"truncation\":\"disabled\",\"usage\":{\"input_tokens\":37,\"input_token"
    "s_details\":{\"cached_tokens\":32},\"output_tokens\":11,\"output_tokens_details\":{\"reasonin"
    "g_tokens\":0},\"total_tokens\":48},\"user\":null,\"metadata\":{}}}\n"
    "\n";

/* A /v1/responses body (pretty-printed, as the API sends it) */
static const char RESPONSES_BODY[] =
    "{\n"
    "  \"id\": \"resp_67ccd2bed1ec8190b14f964abc0542670bb6a6b452d3795b\",\n"
    "  \"object\": \"response\",\n"
    "  \"created_at\": 1741476542,\n"
    "  \"status\": \"completed\",\n"
    "  \"background\": false,\n"
    "  \"error\": null,\n"
    "  \"incomplete_details\": null,\n"
    "  \"instructions\": null,\n"
    "  \"max_output_tokens\": null,\n"
    "  \"model\": \"gpt-4.1-2025-04-14\",\n"
    "  \"output\": [\n"
    "    {\n"
    "      \"id\": \"msg_67ccd2bf17f0819081ff3bb2cf6508e60bb6a6b452d3795b\",\n"
    "      \"type\": \"message\",\n"
    "      \"status\": \"completed\",\n"
    "      \"role\": \"assistant\",\n"
    "      \"content\": [\n"
    "        {\n"
    "          \"type\": \"output_text\",\n"
    "          \"annotations\": [],\n"
    "          \"logprobs\": [],\n"
    "          \"text\": \"Hi there \xe2\x98\x83\"\n"
    "        }\n"
    "      ]\n"
    "    }\n"
    "  ],\n"
    "  \"parallel_tool_calls\": true,\n"
    "  \"previous_response_id\": null,\n"
    "  \"reasoning\": {\n"
    "    \"effort\": null,\n"
    "    \"summary\": null\n"
    "  },\n"
    "  \"store\": true,\n"
    "  \"temperature\": 1.0,\n"
    "  \"text\": {\n"
    "    \"format\": {\n"
    "      \"type\": \"text\"\n"
    "    }\n"
    "  },\n"
    "  \"tool_choice\": \"auto\",\n"
    "  \"tools\": [],\n"
    "  \"top_p\": 1.0,\n"
    "  \"truncation\": \"disabled\",\n"
    "  \"usage\": {\n"
    "    \"input_tokens\": 37,\n"
    "    \"input_tokens_details\": {\n"
    "      \"cached_tokens\": 32\n"
    "    },\n"
    "    \"output_tokens\": 11,\n"
    "    \"output_tokens_details\": {\n"
    "      \"reasoning_tokens\": 0\n"
    "    },\n"
    "    \"total_tokens\": 48\n"
    "  },\n"
    "  \"user\": null,\n"
    "  \"metadata\": {}\n"
    "}\n";

/* A chat.completions body: 1117 in (1024 cached), 46 out; 35 code points */
static const char CHAT_BODY[] =
    "{\n"
    "  \"id\": \"chatcmpl-B9MHDbslfkBeAs8l4bebGdFOJ6PeG\",\n"
    "  \"object\": \"chat.completion\",\n"
    "  \"created\": 1741570283,\n"
    "  \"model\": \"gpt-4o-2024-08-06\",\n"
    "  \"choices\": [\n"
    "    {\n"
    "      \"index\": 0,\n"
    "      \"message\": {\n"
    "        \"role\": \"assistant\",\n"
    "        \"content\": \"The image shows a wooden boardwalk.\",\n"
    "        \"refusal\": null,\n"
    "        \"annotations\": []\n"
    "      },\n"
    "      \"logprobs\": null,\n"
    "      \"finish_reason\": \"stop\"\n"
    "    }\n"
    "  ],\n"
    "  \"usage\": {\n"
    "    \"prompt_tokens\": 1117,\n"
    "    \"completion_tokens\": 46,\n"
    "    \"total_tokens\": 1163,\n"
    "    \"prompt_tokens_details\": {\n"
    "      \"cached_tokens\": 1024,\n"
    "      \"audio_tokens\": 0\n"
    "    },\n"
    "    \"completion_tokens_details\": {\n"
    "      \"reasoning_tokens\": 0,\n"
    "      \"audio_tokens\": 0,\n"
    "      \"accepted_prediction_tokens\": 0,\n"
    "      \"rejected_prediction_tokens\": 0\n"
    "    }\n"
    "  },\n"
    "  \"service_tier\": \"default\",\n"
    "  \"system_fingerprint\": \"fp_fc9f1d7035\"\n"
    "}\n";

/* An embeddings body: 8 in */
static const char EMB_BODY[] =
    "{\n"
    "  \"object\": \"list\",\n"
    "  \"data\": [\n"
    "    {\n"
    "      \"object\": \"embedding\",\n"
    "      \"index\": 0,\n"
    "      \"embedding\": [\n"
    "        0.0023064255,\n"
    "        -0.009327292,\n"
    "        -0.0028842222,\n"
    "        0.015298891\n"
    "      ]\n"
    "    }\n"
    "  ],\n"
    "  \"model\": \"text-embedding-3-small\",\n"
    "  \"usage\": {\n"
    "    \"prompt_tokens\": 8,\n"
    "    \"total_tokens\": 8\n"
    "  }\n"
    "}\n";

/* A completions body: 5 in, 7 out; 23 code points */
static const char COMPLETIONS_BODY[] =
    "{\n"
    "  \"id\": \"cmpl-uqkvlQyYK7bGYrRHQ0eXlWi7\",\n"
    "  \"object\": \"text_completion\",\n"
    "  \"created\": 1589478378,\n"
    "  \"model\": \"gpt-3.5-turbo-instruct\",\n"
    "  \"system_fingerprint\": \"fp_44709d6fcb\",\n"
    "  \"choices\": [\n"
    "    {\n"
    "      \"text\": \"\\n\\nThis is indeed a test\",\n"
    "      \"index\": 0,\n"
    "      \"logprobs\": null,\n"
    "      \"finish_reason\": \"length\"\n"
    "    }\n"
    "  ],\n"
    "  \"usage\": {\n"
    "    \"prompt_tokens\": 5,\n"
    "    \"completion_tokens\": 7,\n"
    "    \"total_tokens\": 12\n"
    "  }\n"
    "}\n";

/* ---- Helpers ---- */

#define MAX_EVENTS 128

/* Stream events as the sniffer reported them. */
typedef struct {
    usage_event_t ev[MAX_EVENTS]; /* in order */
    size_t n;                     /* how many */
} evlog_t;

/* One sniffing run: the figures, the events, the -EMSGSIZE returns. */
typedef struct {
    usage_t u;    /* usage_get() after usage_finish() */
    evlog_t log;  /* events reported */
    int emsgsize; /* feeds that returned -EMSGSIZE */
} run_t;

/* A growable test string. */
typedef struct {
    char *p;    /* bytes, NUL-terminated */
    size_t len; /* length */
} str_t;

/* Event callback: records the event. */
static void on_event(void *arg, const usage_event_t *ev)
{
    evlog_t *l = arg;
    assert_true(l->n < MAX_EVENTS);
    l->ev[l->n++] = *ev;
}

/* Appends n bytes to s. */
static void str_add(str_t *s, const char *p, size_t n)
{
    s->p = realloc(s->p, s->len + n + 1);
    assert_non_null(s->p);
    memcpy(s->p + s->len, p, n);
    s->len += n;
    s->p[s->len] = '\0';
}

/* Appends a C string to s. */
static void str_cat(str_t *s, const char *p)
{
    str_add(s, p, strlen(p));
}

/* Appends n copies of c to s. */
static void str_fill(str_t *s, char c, size_t n)
{
    char *buf = malloc(n ? n : 1);
    assert_non_null(buf);
    memset(buf, c, n);
    str_add(s, buf, n);
    free(buf);
}

/* Copy of text with every "\n" replaced by eol ("\n", "\r\n" or "\r"). */
static str_t with_eol(const char *text, const char *eol)
{
    str_t s = {0};
    str_add(&s, "", 0);
    for (const char *p = text; *p; p++) {
        if (*p == '\n')
            str_cat(&s, eol);
        else
            str_add(&s, p, 1);
    }
    return s;
}

/* Copy of text[0, n) without the bytes [from, to). */
static str_t without(const char *text, size_t n, uint64_t from, uint64_t to)
{
    assert_true(from <= to && to <= n);
    str_t s = {0};
    str_add(&s, text, (size_t)from);
    str_add(&s, text + to, n - (size_t)to);
    return s;
}

/* Sniffs text[0, n) fed in pieces cut at cuts[0..ncuts) (ascending, 0 < cut < n). */
static void sniff_cuts(usage_format_t fmt, bool streaming, size_t max, const char *text,
                       size_t n, const size_t *cuts, size_t ncuts, run_t *out)
{
    memset(out, 0, sizeof *out);
    usage_sniffer_t *s = usage_new(fmt, streaming, max);
    assert_non_null(s);
    usage_set_event_cb(s, on_event, &out->log);
    size_t pos = 0;
    for (size_t i = 0; i <= ncuts; i++) {
        size_t next = i < ncuts ? cuts[i] : n;
        int rc = usage_feed(s, (const uint8_t *)text + pos, next - pos);
        if (rc == -EMSGSIZE)
            out->emsgsize++;
        else
            assert_int_equal(rc, 0);
        pos = next;
    }
    usage_finish(s);
    out->u = *usage_get(s);
    usage_destroy(&s);
    assert_null(s);
}

/* Sniffs text fed in one piece. */
static void sniff(usage_format_t fmt, bool streaming, size_t max, const char *text, size_t n,
                  run_t *out)
{
    sniff_cuts(fmt, streaming, max, text, n, NULL, 0, out);
}

/* Deterministic pseudo-random numbers (xorshift64). */
static uint64_t rnd(uint64_t *state)
{
    uint64_t x = *state;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return *state = x;
}

/* Asserts that two runs read the same figures and reported the same events. */
static void assert_same_run(const run_t *a, const run_t *b)
{
    assert_int_equal(a->u.input_tokens, b->u.input_tokens);
    assert_int_equal(a->u.output_tokens, b->u.output_tokens);
    assert_int_equal(a->u.cached_input_tokens, b->u.cached_input_tokens);
    assert_int_equal(a->u.output_chars, b->u.output_chars);
    assert_int_equal(a->u.found, b->u.found);
    assert_int_equal(a->u.done, b->u.done);
    assert_int_equal(a->u.events, b->u.events);
    assert_int_equal(a->u.malformed, b->u.malformed);
    assert_int_equal(a->u.oversize, b->u.oversize);
    assert_int_equal(a->u.vendor_errors, b->u.vendor_errors);
    assert_int_equal(a->emsgsize > 0, b->emsgsize > 0); /* how many depends on the cuts */
    assert_int_equal(a->log.n, b->log.n);
    for (size_t i = 0; i < a->log.n; i++) {
        assert_int_equal(a->log.ev[i].start, b->log.ev[i].start);
        assert_int_equal(a->log.ev[i].end, b->log.ev[i].end);
        assert_int_equal(a->log.ev[i].usage_only, b->log.ev[i].usage_only);
    }
}

/* Asserts that the figures (not the offsets) of two runs are the same. */
static void assert_same_figures(const run_t *a, const run_t *b)
{
    assert_int_equal(a->u.input_tokens, b->u.input_tokens);
    assert_int_equal(a->u.output_tokens, b->u.output_tokens);
    assert_int_equal(a->u.cached_input_tokens, b->u.cached_input_tokens);
    assert_int_equal(a->u.output_chars, b->u.output_chars);
    assert_int_equal(a->u.found, b->u.found);
    assert_int_equal(a->u.done, b->u.done);
    assert_int_equal(a->u.events, b->u.events);
    assert_int_equal(a->u.malformed, b->u.malformed);
    assert_int_equal(a->log.n, b->log.n);
    for (size_t i = 0; i < a->log.n; i++)
        assert_int_equal(a->log.ev[i].usage_only, b->log.ev[i].usage_only);
}

/* Feeds text whole, byte by byte, cut once at every offset, and in random pieces; every way
 * must give the whole run's result, which is returned in ref. */
static void check_every_split(usage_format_t fmt, bool streaming, size_t max, const char *text,
                              size_t n, run_t *ref)
{
    run_t r;
    sniff(fmt, streaming, max, text, n, ref);

    size_t *cuts = malloc((n + 1) * sizeof *cuts);
    assert_non_null(cuts);
    for (size_t i = 1; i < n; i++)
        cuts[i - 1] = i;
    sniff_cuts(fmt, streaming, max, text, n, cuts, n ? n - 1 : 0, &r);
    assert_same_run(ref, &r);

    for (size_t i = 1; i < n; i++) {
        sniff_cuts(fmt, streaming, max, text, n, &i, 1, &r);
        assert_same_run(ref, &r);
    }

    uint64_t seed = 0x9E3779B97F4A7C15ULL ^ n;
    for (int round = 0; round < 200; round++) {
        size_t nc = 0, pos = 0;
        uint64_t span = round % 2 ? 8 : 200; /* small pieces, then relay-sized ones */
        for (;;) {
            pos += 1 + (size_t)(rnd(&seed) % span);
            if (pos >= n)
                break;
            cuts[nc++] = pos;
        }
        sniff_cuts(fmt, streaming, max, text, n, cuts, nc, &r);
        assert_same_run(ref, &r);
    }
    free(cuts);
}

/* Index of the one usage-only event in a run, or -1 if there is none (fails if several). */
static int usage_only_index(const run_t *r)
{
    int at = -1;
    for (size_t i = 0; i < r->log.n; i++) {
        if (r->log.ev[i].usage_only) {
            assert_int_equal(at, -1);
            at = (int)i;
        }
    }
    return at;
}

/* ---- Streams ---- */

/* A stream and what it holds. */
typedef struct {
    const char *name;       /* for messages */
    usage_format_t fmt;     /* its format */
    const char *text;       /* the stream, "\n" line ends */
    bool found;             /* usage present */
    int64_t in, out, cached; /* the usage */
    int64_t chars;          /* code points of generated content */
    uint32_t events;        /* SSE events */
    int usage_only;         /* index of the usage-only event, -1 if none */
} stream_case_t;

static const stream_case_t s_cases[] = {
    {"openai chat", USAGE_OPENAI_CHAT, CHAT_USAGE, true, 19, 10, 6, 15, 7, 5},
    {"openai chat, no usage", USAGE_OPENAI_CHAT, CHAT_NO_USAGE, false, 0, 0, 0, 15, 6, -1},
    {"openai tool call", USAGE_OPENAI_CHAT, CHAT_TOOLS, true, 1117, 17, 1024, 21, 7, 5},
    {"azure chat", USAGE_OPENAI_CHAT, AZURE_CHAT, true, 25, 4, 0, 14, 8, 6},
    {"openai completions", USAGE_OPENAI_COMPLETIONS, COMPLETIONS, true, 5, 7, 0, 17, 6, 4},
    {"openai responses", USAGE_OPENAI_RESPONSES, RESPONSES, true, 37, 11, 32, 10, 10, -1},
};

#define N_CASES (sizeof s_cases / sizeof s_cases[0])
#define MAX_EV_BYTES 65536

static const char *const s_eols[] = {"\n", "\r\n", "\r"};

/* Checks one run of a stream case against what the stream holds. */
static void check_case(const stream_case_t *c, const run_t *r)
{
    print_message("  %s\n", c->name);
    assert_int_equal(r->u.found, c->found);
    assert_int_equal(r->u.input_tokens, c->in);
    assert_int_equal(r->u.output_tokens, c->out);
    assert_int_equal(r->u.cached_input_tokens, c->cached);
    assert_int_equal(r->u.output_chars, c->chars);
    assert_int_equal(r->u.events, c->events);
    assert_true(r->u.done);
    assert_int_equal(r->u.malformed, 0);
    assert_int_equal(r->u.oversize, 0);
    assert_int_equal(r->u.vendor_errors, 0);
    assert_int_equal(r->log.n, c->events);
    assert_int_equal(usage_only_index(r), c->usage_only);
    /* Events follow each other; between them only comments and blank lines. */
    for (size_t i = 1; i < r->log.n; i++)
        assert_true(r->log.ev[i].start >= r->log.ev[i - 1].end);
}

/* Every vendor stream gives its figures, whatever the line endings and the chunking. */
static void test_streams_every_split(void **state)
{
    (void)state;
    for (size_t i = 0; i < N_CASES; i++) {
        const stream_case_t *c = &s_cases[i];
        run_t lf;
        memset(&lf, 0, sizeof lf);
        for (size_t e = 0; e < 3; e++) {
            str_t s = with_eol(c->text, s_eols[e]);
            run_t r;
            check_every_split(c->fmt, true, MAX_EV_BYTES, s.p, s.len, &r);
            check_case(c, &r);
            if (e == 0)
                lf = r;
            else
                assert_same_figures(&lf, &r);
            free(s.p);
        }
    }
}

/* Azure's prompt-filter chunk ("choices": [], no usage) is content, not the usage chunk; only
 * the chunk with usage and no choices is usage-only. */
static void test_azure_filter_chunk_is_not_usage(void **state)
{
    (void)state;
    run_t r;
    sniff(USAGE_OPENAI_CHAT, true, MAX_EV_BYTES, AZURE_CHAT, strlen(AZURE_CHAT), &r);
    assert_int_equal(r.log.n, 8);
    assert_false(r.log.ev[0].usage_only); /* prompt_filter_results */
    assert_false(r.log.ev[5].usage_only); /* content_filter_offsets */
    assert_true(r.log.ev[6].usage_only);
    assert_int_equal(r.log.ev[0].start, 0);
    assert_memory_equal(AZURE_CHAT + r.log.ev[0].start, "data: {\"choices\":[],", 20);

    /* The same filter chunk with "usage": null, or null choices and null usage. */
    static const char s[] =
        "data: {\"choices\":[],\"created\":0,\"id\":\"\",\"model\":\"\",\"object\":\"\","
        "\"prompt_filter_results\":[{\"prompt_index\":0,\"content_filter_results\":{}}],"
        "\"usage\":null}\n\n"
        "data: {\"choices\":null,\"usage\":null}\n\n"
        "data: [DONE]\n\n";
    sniff(USAGE_OPENAI_CHAT, true, MAX_EV_BYTES, s, strlen(s), &r);
    assert_int_equal(r.log.n, 3);
    assert_int_equal(usage_only_index(&r), -1);
    assert_false(r.u.found);
    assert_int_equal(r.u.malformed, 0);

    /* Usage on a chunk that still has choices: read, but not usage-only (it has content). */
    static const char t[] =
        "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"ok\"},"
        "\"finish_reason\":\"stop\"}],"
        "\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":1,\"total_tokens\":4}}\n\n"
        "data: [DONE]\n\n";
    sniff(USAGE_OPENAI_CHAT, true, MAX_EV_BYTES, t, strlen(t), &r);
    assert_true(r.u.found);
    assert_int_equal(r.u.input_tokens, 3);
    assert_int_equal(r.u.output_tokens, 1);
    assert_int_equal(r.u.output_chars, 2);
    assert_int_equal(usage_only_index(&r), -1);
}

/* Cutting the usage-only event's bytes out leaves a valid stream with everything else. */
static void test_usage_chunk_offsets_exact(void **state)
{
    (void)state;
    for (size_t i = 0; i < N_CASES; i++) {
        const stream_case_t *c = &s_cases[i];
        if (c->usage_only < 0)
            continue;
        for (size_t e = 0; e < 3; e++) {
            str_t s = with_eol(c->text, s_eols[e]);
            run_t r, cut;
            sniff(c->fmt, true, MAX_EV_BYTES, s.p, s.len, &r);
            const usage_event_t *ue = &r.log.ev[c->usage_only];
            /* The slice is exactly one event: "data: {...}" and its blank line. */
            size_t el = strlen(s_eols[e]);
            assert_memory_equal(s.p + ue->start, "data: {", 7);
            assert_memory_equal(s.p + ue->end - 2 * el, s_eols[e], el);
            assert_memory_equal(s.p + ue->end - el, s_eols[e], el);
            assert_true(ue->end <= s.len);
            str_t rest = without(s.p, s.len, ue->start, ue->end);
            assert_null(strstr(rest.p, "\"prompt_tokens\""));
            assert_non_null(strstr(rest.p, "data: [DONE]"));
            sniff(c->fmt, true, MAX_EV_BYTES, rest.p, rest.len, &cut);
            assert_false(cut.u.found);
            assert_true(cut.u.done);
            assert_int_equal(cut.u.output_chars, c->chars);
            assert_int_equal(cut.u.events, c->events - 1);
            assert_int_equal(cut.u.malformed, 0);
            assert_int_equal(usage_only_index(&cut), -1);
            /* The events before the cut keep their offsets; those after move by its size. */
            for (size_t k = 0; k < cut.log.n; k++) {
                const usage_event_t *o = &r.log.ev[k < (size_t)c->usage_only ? k : k + 1];
                uint64_t shift = k < (size_t)c->usage_only ? 0 : ue->end - ue->start;
                assert_int_equal(cut.log.ev[k].start, o->start - shift);
                assert_int_equal(cut.log.ev[k].end, o->end - shift);
            }
            free(rest.p);
            free(s.p);
        }
    }
}

/* Drop ranges a relay has been told about. */
typedef struct {
    uint64_t from[8]; /* starts */
    uint64_t to[8];   /* ends */
    size_t n;         /* how many */
} drops_t;

/* Event callback of the relay: remembers the usage-only events. */
static void on_relay_event(void *arg, const usage_event_t *ev)
{
    drops_t *d = arg;
    if (!ev->usage_only)
        return;
    assert_true(d->n < 8);
    d->from[d->n] = ev->start;
    d->to[d->n] = ev->end;
    d->n++;
}

/* Relay step: appends text[*fwd, upto) to out, leaving out the dropped ranges. */
static void relay_forward(const char *text, uint64_t *fwd, uint64_t upto, const drops_t *d,
                          str_t *out)
{
    for (uint64_t b = *fwd; b < upto; b++) {
        bool dropped = false;
        for (size_t i = 0; i < d->n; i++)
            dropped = dropped || (b >= d->from[i] && b < d->to[i]);
        if (!dropped)
            str_add(out, text + b, 1);
    }
    if (upto > *fwd)
        *fwd = upto;
}

/* A gateway whose user did not ask for usage: forwards up to usage_hold_from() after each
 * piece, minus the usage-only events, and gets the stream without the usage chunk. */
static void test_relay_drops_usage_chunk(void **state)
{
    (void)state;
    uint64_t seed = 42;
    for (size_t i = 0; i < N_CASES; i++) {
        const stream_case_t *c = &s_cases[i];
        for (size_t e = 0; e < 3; e++) {
            str_t s = with_eol(c->text, s_eols[e]);
            run_t whole;
            sniff(c->fmt, true, MAX_EV_BYTES, s.p, s.len, &whole);
            str_t want = {0};
            if (c->usage_only >= 0) {
                const usage_event_t *ue = &whole.log.ev[c->usage_only];
                want = without(s.p, s.len, ue->start, ue->end);
            } else {
                str_add(&want, s.p, s.len);
            }
            for (int round = 0; round < 50; round++) {
                usage_sniffer_t *u = usage_new(c->fmt, true, MAX_EV_BYTES);
                assert_non_null(u);
                drops_t d = {0};
                usage_set_event_cb(u, on_relay_event, &d);
                str_t out = {0};
                str_add(&out, "", 0);
                uint64_t fwd = 0;
                size_t pos = 0;
                while (pos < s.len) {
                    size_t k = 1 + (size_t)(rnd(&seed) % (round % 2 ? 5 : 300));
                    if (k > s.len - pos)
                        k = s.len - pos;
                    assert_int_equal(usage_feed(u, (const uint8_t *)s.p + pos, k), 0);
                    pos += k;
                    uint64_t hold = usage_hold_from(u);
                    assert_true(hold <= pos);
                    relay_forward(s.p, &fwd, hold, &d, &out);
                }
                usage_finish(u);
                relay_forward(s.p, &fwd, s.len, &d, &out); /* the end: nothing is held */
                assert_int_equal(out.len, want.len);
                assert_memory_equal(out.p, want.p, want.len);
                assert_int_equal(usage_get(u)->found, c->found);
                usage_destroy(&u);
                free(out.p);
            }
            free(want.p);
            free(s.p);
        }
    }
}

/* A stream cut short anywhere: never a crash, text counted so far, usage only if its whole
 * event arrived. */
static void test_interrupted_streams(void **state)
{
    (void)state;
    static const size_t pick[] = {0, 5, 3}; /* chat, responses, tool call */
    for (size_t p = 0; p < sizeof pick / sizeof pick[0]; p++) {
        const stream_case_t *c = &s_cases[pick[p]];
        size_t n = strlen(c->text);
        run_t whole;
        sniff(c->fmt, true, MAX_EV_BYTES, c->text, n, &whole);
        /* The event that carries the usage: the usage-only one, else the last. */
        size_t ui = c->usage_only >= 0 ? (size_t)c->usage_only : whole.log.n - 1;
        uint64_t usage_end = whole.log.ev[ui].end;
        uint64_t last_end = whole.log.ev[whole.log.n - 1].end;
        int64_t prev_chars = 0;
        for (size_t len = 0; len <= n; len++) {
            run_t r;
            sniff(c->fmt, true, MAX_EV_BYTES, c->text, len, &r);
            assert_int_equal(r.u.found, len >= usage_end);
            assert_int_equal(r.u.done, len >= last_end);
            assert_true(r.u.output_chars >= prev_chars);
            assert_true(r.u.output_chars <= c->chars);
            assert_int_equal(r.u.malformed, 0);
            prev_chars = r.u.output_chars;
        }
        assert_int_equal(prev_chars, c->chars);
    }

    /* No usage and cut before [DONE]: nothing found, the text so far counted. */
    const char *end = CHAT_NO_USAGE;
    for (int k = 0; k < 4; k++) /* the 4th event: the one with the CJK text */
        end = strstr(end + (k > 0), "data: ");
    assert_non_null(end);
    run_t r;
    sniff(USAGE_OPENAI_CHAT, true, MAX_EV_BYTES, CHAT_NO_USAGE, (size_t)(end - CHAT_NO_USAGE),
          &r);
    assert_false(r.u.found);
    assert_false(r.u.done);
    assert_int_equal(r.u.output_chars, 11); /* "" + "Hello" + " wörld" */
    assert_int_equal(r.u.events, 3);
}

/* ---- Bodies ---- */

/* Non-streamed bodies: the usage at the top level, cut anywhere gives the same result. */
static void test_bodies(void **state)
{
    (void)state;
    static const struct {
        usage_format_t fmt;
        const char *text;
        int64_t in, out, cached, chars;
    } b[] = {
        {USAGE_OPENAI_CHAT, CHAT_BODY, 1117, 46, 1024, 35},
        {USAGE_OPENAI_COMPLETIONS, COMPLETIONS_BODY, 5, 7, 0, 23},
        {USAGE_OPENAI_EMBEDDINGS, EMB_BODY, 8, 0, 0, 0},
        {USAGE_OPENAI_RESPONSES, RESPONSES_BODY, 37, 11, 32, 10},
    };
    for (size_t i = 0; i < sizeof b / sizeof b[0]; i++) {
        run_t r;
        check_every_split(b[i].fmt, false, 1 << 20, b[i].text, strlen(b[i].text), &r);
        assert_true(r.u.found);
        assert_true(r.u.done);
        assert_int_equal(r.u.input_tokens, b[i].in);
        assert_int_equal(r.u.output_tokens, b[i].out);
        assert_int_equal(r.u.cached_input_tokens, b[i].cached);
        assert_int_equal(r.u.output_chars, b[i].chars);
        assert_int_equal(r.u.malformed, 0);
        assert_int_equal(r.u.events, 0);
        assert_int_equal(r.log.n, 0);
    }

    /* An error body: no usage, one vendor error, nothing malformed. */
    static const char err[] = "{\n  \"error\": {\n    \"message\": \"Incorrect API key provided: "
                              "sk-abc.\",\n    \"type\": \"invalid_request_error\",\n    "
                              "\"param\": null,\n    \"code\": \"invalid_api_key\"\n  }\n}\n";
    run_t r;
    sniff(USAGE_OPENAI_CHAT, false, 1 << 20, err, strlen(err), &r);
    assert_false(r.u.found);
    assert_int_equal(r.u.vendor_errors, 1);
    assert_int_equal(r.u.malformed, 0);
    /* Azure's error shape too. */
    static const char az[] = "{\"error\":{\"code\":\"401\",\"message\":\"Access denied due to "
                             "invalid subscription key or wrong API endpoint.\"}}";
    sniff(USAGE_OPENAI_EMBEDDINGS, false, 1 << 20, az, strlen(az), &r);
    assert_false(r.u.found);
    assert_int_equal(r.u.vendor_errors, 1);

    /* Cut short, empty, or not JSON: not found, never fatal. */
    sniff(USAGE_OPENAI_CHAT, false, 1 << 20, CHAT_BODY, strlen(CHAT_BODY) / 2, &r);
    assert_false(r.u.found);
    assert_false(r.u.done);
    assert_int_equal(r.u.malformed, 1);
    sniff(USAGE_OPENAI_CHAT, false, 1 << 20, "", 0, &r);
    assert_false(r.u.found);
    assert_false(r.u.done);
    assert_int_equal(r.u.malformed, 0);
    sniff(USAGE_OPENAI_RESPONSES, false, 1 << 20, "<html>502 Bad Gateway</html>", 28, &r);
    assert_false(r.u.found);
    assert_int_equal(r.u.malformed, 1);
    sniff(USAGE_OPENAI_CHAT, false, 1 << 20, "[1,2,3]", 7, &r);
    assert_int_equal(r.u.malformed, 1);
    /* A usage whose counts are not counts. */
    static const char bad[] = "{\"choices\":[],\"usage\":{\"prompt_tokens\":1.5,"
                              "\"completion_tokens\":2}}";
    sniff(USAGE_OPENAI_CHAT, false, 1 << 20, bad, strlen(bad), &r);
    assert_false(r.u.found);
    assert_int_equal(r.u.malformed, 1);
}

/* A body over max_bytes is not gathered: one -EMSGSIZE, and its usage is read from its last
 * 64 KiB (found, the vendor's figures; not done, no output characters). */
static void test_body_limit(void **state)
{
    (void)state;
    size_t n = strlen(CHAT_BODY);
    run_t r, whole;
    check_every_split(USAGE_OPENAI_CHAT, false, n, CHAT_BODY, n, &whole);
    assert_true(whole.u.found);
    assert_int_equal(whole.emsgsize, 0);

    check_every_split(USAGE_OPENAI_CHAT, false, n - 1, CHAT_BODY, n, &r);
    assert_true(r.u.found);
    assert_false(r.u.done);
    assert_int_equal(r.u.input_tokens, whole.u.input_tokens);
    assert_int_equal(r.u.output_tokens, whole.u.output_tokens);
    assert_int_equal(r.u.cached_input_tokens, whole.u.cached_input_tokens);
    assert_int_equal(r.u.output_chars, 0);
    assert_int_equal(r.u.oversize, 1);
    assert_int_equal(r.u.malformed, 0);
    assert_int_equal(r.emsgsize, 1);

    sniff(USAGE_OPENAI_RESPONSES, false, 1, RESPONSES_BODY, strlen(RESPONSES_BODY), &r);
    assert_true(r.u.found);
    assert_int_equal(r.u.oversize, 1);

    /* A big body (an embeddings answer of 4 MiB) against a 1 MiB limit: read from its tail. */
    str_t big = {0};
    str_cat(&big, "{\"object\":\"list\",\"data\":[{\"object\":\"embedding\",\"index\":0,"
                  "\"embedding\":\"");
    str_fill(&big, 'A', 4u << 20);
    str_cat(&big, "\"}],\"model\":\"text-embedding-3-small\","
                  "\"usage\":{\"prompt_tokens\":8,\"total_tokens\":8}}");
    sniff(USAGE_OPENAI_EMBEDDINGS, false, 1u << 20, big.p, big.len, &r);
    assert_true(r.u.found);
    assert_int_equal(r.u.input_tokens, 8);
    assert_int_equal(r.u.oversize, 1);
    sniff(USAGE_OPENAI_EMBEDDINGS, false, 8u << 20, big.p, big.len, &r);
    assert_true(r.u.found);
    assert_int_equal(r.u.input_tokens, 8);

    /* Cut before its usage, or with "usage" only as escaped text: nothing is found. */
    big.len -= 60;
    sniff(USAGE_OPENAI_EMBEDDINGS, false, 1u << 20, big.p, big.len, &r);
    assert_false(r.u.found);
    free(big.p);
    str_t text = {0};
    str_cat(&text, "{\"choices\":[{\"message\":{\"content\":\"");
    str_fill(&text, 'x', 2u << 20);
    str_cat(&text, " \\\"usage\\\":{\\\"prompt_tokens\\\":999}\"}}]");
    sniff(USAGE_OPENAI_CHAT, false, 1u << 20, text.p, text.len, &r);
    assert_false(r.u.found);
    free(text.p);

    /* A Gemini JSON array over the limit: the last element's totals. */
    str_t arr = {0};
    str_cat(&arr, "[");
    for (int i = 0; i < 20000; i++) {
        char el[256];
        snprintf(el, sizeof el, "%s{\"candidates\":[{\"content\":{\"parts\":[{\"text\":\" t%d\"}],"
                 "\"role\":\"model\"}%s}],\"usageMetadata\":{\"promptTokenCount\":7,"
                 "\"candidatesTokenCount\":%d,\"totalTokenCount\":%d}}\r\n",
                 i ? "," : "", i, i == 19999 ? ",\"finishReason\":\"STOP\"" : "", i + 1, i + 8);
        str_cat(&arr, el);
    }
    str_cat(&arr, "]");
    sniff(USAGE_GEMINI, false, 1u << 20, arr.p, arr.len, &r);
    assert_true(r.u.found);
    assert_int_equal(r.u.input_tokens, 7);
    assert_int_equal(r.u.output_tokens, 20000);
    free(arr.p);
}

/* ---- Limits, malformed and error events in streams ---- */

/* An event over max_bytes is skipped (one -EMSGSIZE) and the stream goes on. */
static void test_stream_event_limit(void **state)
{
    (void)state;
    /* A content chunk padded far beyond the limit, between two ordinary ones. */
    str_t s = {0};
    str_cat(&s, "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"abc\"}}],"
                "\"usage\":null}\n\n");
    str_cat(&s, "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"lost\"}}],"
                "\"usage\":null,\"obfuscation\":\"");
    str_fill(&s, 'x', 3000);
    str_cat(&s, "\"}\n\n");
    str_cat(&s, "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"de\"}}],"
                "\"usage\":null}\n\n");
    size_t usage_at = s.len;
    str_cat(&s, "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":12,\"completion_tokens\":3,"
                "\"total_tokens\":15},\"obfuscation\":\"");
    str_fill(&s, 'y', 200);
    str_cat(&s, "\"}\n\ndata: [DONE]\n\n");
    run_t r;
    check_every_split(USAGE_OPENAI_CHAT, true, 1024, s.p, s.len, &r);
    assert_true(r.u.found);
    assert_int_equal(r.u.input_tokens, 12);
    assert_int_equal(r.u.output_tokens, 3);
    assert_int_equal(r.u.output_chars, 5);
    assert_int_equal(r.u.oversize, 1);
    assert_int_equal(r.emsgsize, 1);
    assert_int_equal(r.u.events, 4);
    assert_int_equal(r.u.malformed, 0);
    assert_true(r.u.done);
    assert_int_equal(r.log.n, 4);
    assert_int_equal(usage_only_index(&r), 2);
    assert_int_equal(r.log.ev[2].start, usage_at);

    /* The usage chunk itself over the limit: not found, the rest read. */
    check_every_split(USAGE_OPENAI_CHAT, true, 256, s.p, s.len, &r);
    assert_false(r.u.found);
    assert_int_equal(r.u.output_chars, 5);
    assert_int_equal(r.u.oversize, 2);
    assert_int_equal(r.emsgsize, 1); /* fed whole: one return for both */
    assert_true(r.u.done);
    free(s.p);
}

/* Malformed events are counted and skipped; the good ones around them are read. */
static void test_malformed_events(void **state)
{
    (void)state;
    static const char s[] =
        "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"ok\"}}],\"usage\":null}\n\n"
        "data: {\"choices\": [\n\n"                                       /* cut short */
        "data: 42\n\n"                                                    /* not an object */
        "data: \"text\"\n\n"                                              /* not an object */
        "data: [1,2]\n\n"                                                 /* an array */
        "data: {\"choices\":[{\"delta\":{\"content\":\"\xff\xfe\"}}]}\n\n" /* bad UTF-8 */
        "data:\n\n"                                                       /* empty data */
        "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":\"12\",\"completion_tokens\":3}}\n\n"
        "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":-1,\"completion_tokens\":3}}\n\n"
        "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":99999999999999999999999,"
        "\"completion_tokens\":3}}\n\n"                                   /* too big: bad JSON */
        "data: {\"choices\":[],\"usage\":{\"completion_tokens\":3}}\n\n"  /* no prompt_tokens */
        "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"x\"}}],\n" /* two data lines */
        "data: \"usage\":null}\n\n"
        "data: {\"choices\":\"nope\",\"usage\":null}\n\n"                 /* odd, but JSON */
        "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":7,\"completion_tokens\":2,"
        "\"prompt_tokens_details\":null}}\n\n"
        "data: [DONE]\n\n";
    run_t r;
    check_every_split(USAGE_OPENAI_CHAT, true, MAX_EV_BYTES, s, strlen(s), &r);
    assert_true(r.u.found);
    assert_int_equal(r.u.input_tokens, 7);
    assert_int_equal(r.u.output_tokens, 2);
    assert_int_equal(r.u.cached_input_tokens, 0);
    assert_int_equal(r.u.output_chars, 3);
    assert_int_equal(r.u.events, 15);
    assert_int_equal(r.u.malformed, 10);
    assert_int_equal(r.u.vendor_errors, 0);
    assert_true(r.u.done);

    /* A bad usage after a good one keeps the good figures. */
    static const char t[] =
        "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":7,\"completion_tokens\":2}}\n\n"
        "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":\"x\",\"completion_tokens\":2}}\n\n";
    sniff(USAGE_OPENAI_CHAT, true, MAX_EV_BYTES, t, strlen(t), &r);
    assert_true(r.u.found);
    assert_int_equal(r.u.input_tokens, 7);
    assert_int_equal(r.u.malformed, 1);
    assert_false(r.u.done);
}

/* Errors the vendor sends inside a stream are counted; they are not usage. */
static void test_vendor_errors_in_streams(void **state)
{
    (void)state;
    static const char chat[] =
        "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hel\"}}],\"usage\":null}\n\n"
        "data: {\"error\":{\"message\":\"The server had an error while processing your "
        "request.\",\"type\":\"server_error\",\"param\":null,\"code\":null}}\n\n";
    run_t r;
    check_every_split(USAGE_OPENAI_CHAT, true, MAX_EV_BYTES, chat, strlen(chat), &r);
    assert_false(r.u.found);
    assert_false(r.u.done);
    assert_int_equal(r.u.vendor_errors, 1);
    assert_int_equal(r.u.output_chars, 3);
    assert_int_equal(usage_only_index(&r), -1);

    static const char resp_err[] =
        "event: response.output_text.delta\n"
        "data: {\"type\":\"response.output_text.delta\",\"sequence_number\":4,\"item_id\":\"m\","
        "\"output_index\":0,\"content_index\":0,\"delta\":\"Hi\"}\n\n"
        "event: error\n"
        "data: {\"type\":\"error\",\"code\":\"server_error\",\"message\":\"boom\",\"param\":null,"
        "\"sequence_number\":5}\n\n";
    check_every_split(USAGE_OPENAI_RESPONSES, true, MAX_EV_BYTES, resp_err, strlen(resp_err),
                      &r);
    assert_false(r.u.found);
    assert_false(r.u.done);
    assert_int_equal(r.u.vendor_errors, 1);
    assert_int_equal(r.u.output_chars, 2);

    /* response.failed: over, an error, no usage. */
    static const char failed[] =
        "event: response.failed\n"
        "data: {\"type\":\"response.failed\",\"sequence_number\":3,\"response\":{\"id\":\"resp_1\","
        "\"object\":\"response\",\"status\":\"failed\",\"error\":{\"code\":\"server_error\","
        "\"message\":\"boom\"},\"output\":[],\"usage\":null}}\n\n";
    sniff(USAGE_OPENAI_RESPONSES, true, MAX_EV_BYTES, failed, strlen(failed), &r);
    assert_false(r.u.found);
    assert_true(r.u.done);
    assert_int_equal(r.u.vendor_errors, 1);

    /* response.incomplete (max_output_tokens reached) carries the usage, as completed does;
     * the type is read from the SSE event name when the JSON has none. */
    static const char incomplete[] =
        "event: response.reasoning_summary_text.delta\n"
        "data: {\"type\":\"response.reasoning_summary_text.delta\",\"delta\":\"Think\"}\n\n"
        "event: response.function_call_arguments.delta\n"
        "data: {\"delta\":\"{}\"}\n\n"
        "event: response.audio.delta\n"
        "data: {\"type\":\"response.audio.delta\",\"delta\":\"UklGRiQAAABXQVZF\"}\n\n"
        ": a comment\n\n"
        "event: response.incomplete\n"
        "data: {\"type\":\"response.incomplete\",\"sequence_number\":9,\"response\":{\"id\":"
        "\"resp_2\",\"status\":\"incomplete\",\"incomplete_details\":{\"reason\":"
        "\"max_output_tokens\"},\"usage\":{\"input_tokens\":20,\"input_tokens_details\":"
        "{\"cached_tokens\":0},\"output_tokens\":16,\"output_tokens_details\":"
        "{\"reasoning_tokens\":16},\"total_tokens\":36}}}\n\n";
    check_every_split(USAGE_OPENAI_RESPONSES, true, MAX_EV_BYTES, incomplete,
                      strlen(incomplete), &r);
    assert_true(r.u.found);
    assert_true(r.u.done);
    assert_int_equal(r.u.input_tokens, 20);
    assert_int_equal(r.u.output_tokens, 16);
    assert_int_equal(r.u.output_chars, 7); /* "Think" + "{}"; audio bytes are not text */
    assert_int_equal(r.u.vendor_errors, 0);
}

/* ---- Anthropic, Gemini and Bedrock ---- */

/* Anthropic Messages stream (shapes from Anthropic's streaming reference): a thinking block, a
 * text block and a tool_use block. message_start: 25 in + 100 cache writes + 2000 cache reads
 * (output_tokens 1: a placeholder); message_delta: 89 out. Generated text: "Let me think." (13)
 * + "Hello" (5) + ", wörld ☃" (9) + "" + {"location": "Paris"} (21) = 48 code points. 16 events;
 * the usage is complete with message_delta (14), the answer with message_stop (15). */
static const char ANTHROPIC_STREAM[] =
    "event: message_start\n"
    "data: "
    "{\"type\":\"message_start\",\"message\":{\"id\":\"msg_01XFDUDYJgAACzvnptvVoYEL\",\"type\""
    ":\"message\",\"role\":\"assistant\",\"model\":\"claude-sonnet-4-5-20250929\",\"content\":[],\""
    "stop_reason\":null,\"stop_sequence\":null,\"usage\":{\"input_tokens\":25,\"cache_creation_inp"
    "ut_tokens\":100,\"cache_read_input_tokens\":2000,\"cache_creation\":{\"ephemeral_5m_input_tok"
    "ens\":100,\"ephemeral_1h_input_tokens\":0},\"output_tokens\":1,\"service_tier\":\"standard\"}}"
    "}\n"
    "\n"
    "event: content_block_start\n"
    "data: "
    "{\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"thinking\",\""
    "thinking\":\"\",\"signature\":\"\"}}\n"
    "\n"
    "event: content_block_delta\n"
    "data: "
    "{\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"thinking_delta\",\"th"
    "inking\":\"Let me think.\"}}\n"
    "\n"
    "event: content_block_delta\n"
    "data: "
    "{\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"signature_delta\",\"s"
    "ignature\":\"EqQBCgIYAhIM1gbcDa9GJwZA2b3hGgxBdjrkzLoky3dl1pkiMOYds\"}}\n"
    "\n"
    "event: content_block_stop\n"
    "data: {\"type\":\"content_block_stop\",\"index\":0}\n"
    "\n"
    "event: content_block_start\n"
    "data: "
    "{\"type\":\"content_block_start\",\"index\":1,\"content_block\":{\"type\":\"text\",\"text"
    "\":\"\"}}\n"
    "\n"
    "event: ping\n"
    "data: {\"type\": \"ping\"}\n"
    "\n"
    "event: content_block_delta\n"
    "data: "
    "{\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"text_delta\",\"text\""
    ":\"Hello\"}}\n"
    "\n"
    "event: content_block_delta\n"
    "data: "
    "{\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"text_delta\",\"text\""
    ":\", w\xc3\xb6rld \xe2\x98\x83\"}}\n"
    "\n"
    "event: content_block_stop\n"
    "data: {\"type\":\"content_block_stop\",\"index\":1}\n"
    "\n"
    "event: content_block_start\n"
    "data: "
    "{\"type\":\"content_block_start\",\"index\":2,\"content_block\":{\"type\":\"tool_use\",\""
    "id\":\"toolu_01T1x1fJ34qAmk2tNTrN7Up6\",\"name\":\"get_weather\",\"input\":{}}}\n"
    "\n"
    "event: content_block_delta\n"
    "data: "
    "{\"type\":\"content_block_delta\",\"index\":2,\"delta\":{\"type\":\"input_json_delta\",\""
    "partial_json\":\"\"}}\n"
    "\n"
    "event: content_block_delta\n"
    "data: "
    "{\"type\":\"content_block_delta\",\"index\":2,\"delta\":{\"type\":\"input_json_delta\",\""
    "partial_json\":\"{\\\"location\\\": \\\"Paris\\\"}\"}}\n"
    "\n"
    "event: content_block_stop\n"
    "data: {\"type\":\"content_block_stop\",\"index\":2}\n"
    "\n"
    "event: message_delta\n"
    "data: "
    "{\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"tool_use\",\"stop_sequence\":nul"
    "l},\"usage\":{\"output_tokens\":89}}\n"
    "\n"
    "event: message_stop\n"
    "data: {\"type\":\"message_stop\"}\n"
    "\n";

/* Gemini streamGenerateContent?alt=sse (shapes from recorded gemini-2.5-flash answers):
 * usageMetadata on every chunk, cumulative; the finishReason chunk holds the totals: 2048 in
 * (1024 cached), 7 candidates + 25 thoughts = 32 out. Text "**Thinking about it**" (a thought
 * part, 21) + "The quick" (9) + " brown fox jumps über" (21) = 51 code points. */
static const char GEMINI_STREAM[] =
    "data: {\"candidates\": [{\"content\": {\"parts\": [{\"text\": \"**Thinking about it**\",\"tho"
    "ught\": true}],\"role\": \"model\"},\"index\": 0}],\"usageMetadata\": {\"promptTokenCount\": 2"
    "048,\"totalTokenCount\": 2048,\"promptTokensDetails\": [{\"modality\": \"TEXT\",\"tokenCount\""
    ": 2048}]},\"modelVersion\": \"gemini-2.5-flash\",\"responseId\": \"mAitaJDoNbXt7M8PwvqKwQk\"}"
    "\n"
    "\n"
    "data: {\"candidates\": [{\"content\": {\"parts\": [{\"text\": \"The quick\"}],\"role\": \"mode"
    "l\"},\"index\": 0}],\"usageMetadata\": {\"promptTokenCount\": 2048,\"candidatesTokenCount\": "
    "2,\"totalTokenCount\": 2075,\"cachedContentTokenCount\": 1024,\"promptTokensDetails\": [{\"mo"
    "dality\": \"TEXT\",\"tokenCount\": 2048}],\"thoughtsTokenCount\": 25},\"modelVersion\": \"gemi"
    "ni-2.5-flash\",\"responseId\": \"mAitaJDoNbXt7M8PwvqKwQk\"}\n"
    "\n"
    "data: {\"candidates\": [{\"content\": {\"parts\": [{\"text\": \" brown fox jumps \xc3\xbc"
    "ber\"}],\"role\": \"model\"},\"finishReason\": \"STOP\",\"index\": 0}],\"usageMetadata\": "
    "{\"pr"
    "omptTokenCount\": 2048,\"candidatesTokenCount\": 7,\"totalTokenCount\": 2080,\"cachedConten"
    "tTokenCount\": 1024,\"promptTokensDetails\": [{\"modality\": \"TEXT\",\"tokenCount\": 2048}],"
    "\"cacheTokensDetails\": [{\"modality\": \"TEXT\",\"tokenCount\": 1024}],\"thoughtsTokenCount"
    "\": 25},\"modelVersion\": \"gemini-2.5-flash\",\"responseId\": \"mAitaJDoNbXt7M8PwvqKwQk\"}\n"
    "\n";

/* Gemini streamGenerateContent without alt=sse: one JSON array, elements separated as Google
 * sends them ("\n,\r\n"). 9 in, 5 out; "The quick" + " brown fox" = 19 code points. */
static const char GEMINI_ARRAY[] = "[{\n"
                                   "  \"candidates\": [\n"
                                   "    {\n"
                                   "      \"content\": {\n"
                                   "        \"parts\": [\n"
                                   "          {\n"
                                   "            \"text\": \"The quick\"\n"
                                   "          }\n"
                                   "        ],\n"
                                   "        \"role\": \"model\"\n"
                                   "      },\n"
                                   "      \"index\": 0\n"
                                   "    }\n"
                                   "  ],\n"
                                   "  \"usageMetadata\": {\n"
                                   "    \"promptTokenCount\": 9,\n"
                                   "    \"totalTokenCount\": 9\n"
                                   "  },\n"
                                   "  \"modelVersion\": \"gemini-2.0-flash\"\n"
                                   "}\n"
                                   ",\r\n"
                                   "{\n"
                                   "  \"candidates\": [\n"
                                   "    {\n"
                                   "      \"content\": {\n"
                                   "        \"parts\": [\n"
                                   "          {\n"
                                   "            \"text\": \" brown fox\"\n"
                                   "          }\n"
                                   "        ],\n"
                                   "        \"role\": \"model\"\n"
                                   "      },\n"
                                   "      \"finishReason\": \"STOP\",\n"
                                   "      \"index\": 0\n"
                                   "    }\n"
                                   "  ],\n"
                                   "  \"usageMetadata\": {\n"
                                   "    \"promptTokenCount\": 9,\n"
                                   "    \"candidatesTokenCount\": 5,\n"
                                   "    \"totalTokenCount\": 14\n"
                                   "  },\n"
                                   "  \"modelVersion\": \"gemini-2.0-flash\"\n"
                                   "}\n"
                                   "]";

/* Gemini generateContent body: 11 in, 6 out (+ 0 thoughts); "1+1 equals 2." = 13 code points */
static const char GEMINI_BODY[] = "{\n"
                                  "  \"candidates\": [\n"
                                  "    {\n"
                                  "      \"content\": {\n"
                                  "        \"parts\": [\n"
                                  "          {\n"
                                  "            \"text\": \"1+1 equals 2.\"\n"
                                  "          }\n"
                                  "        ],\n"
                                  "        \"role\": \"model\"\n"
                                  "      },\n"
                                  "      \"finishReason\": \"STOP\",\n"
                                  "      \"avgLogprobs\": -0.0028\n"
                                  "    }\n"
                                  "  ],\n"
                                  "  \"usageMetadata\": {\n"
                                  "    \"promptTokenCount\": 8,\n"
                                  "    \"candidatesTokenCount\": 6,\n"
                                  "    \"totalTokenCount\": 17,\n"
                                  "    \"toolUsePromptTokenCount\": 3,\n"
                                  "    \"promptTokensDetails\": [\n"
                                  "      {\n"
                                  "        \"modality\": \"TEXT\",\n"
                                  "        \"tokenCount\": 8\n"
                                  "      }\n"
                                  "    ]\n"
                                  "  },\n"
                                  "  \"modelVersion\": \"gemini-2.0-flash\",\n"
                                  "  \"responseId\": \"Il0taoSYJ5Cez7IPvu2x4Qs\"\n"
                                  "}\n";

/* Anthropic Messages body: 2125 in (2000 cached), 40 out; "Hi!" (3) + tool input {"q":"é"} as
 * compact JSON (9) = 12 code points */
static const char ANTHROPIC_BODY[] =
    "{\"id\":\"msg_013Zva2CMHLNnXjNJJKqJ2EF\",\"type\":\"message\",\"role\":\"assistant\","
    "\"model\":"
    "\"claude-sonnet-4-5-20250929\",\"content\":[{\"type\":\"text\",\"text\":\"Hi!\"},{\"type\":"
    "\"to"
    "ol_use\",\"id\":\"toolu_01A09q90qw90lq917835lq9\",\"name\":\"search\",\"input\":{\"q\":"
    "\"\xc3\xa9"
    "\"}}],\"stop_reason\":\"tool_use\",\"stop_sequence\":null,\"usage\":{\"input_tokens\":25,\"cac"
    "he_creation_input_tokens\":100,\"cache_read_input_tokens\":2000,\"output_tokens\":40}}";

/* Bedrock converse body: 30 + 2000 cache reads + 500 cache writes in, 628 out; "Thinking."
 * (9) + "Bonjour à tous" (14) + {"sign":"WZPZ"} (15) = 38 code points */
static const char CONVERSE_BODY[] =
    "{\"metrics\":{\"latencyMs\":1275},\"output\":{\"message\":{\"content\":[{\"reasoningContent\":"
    "{"
    "\"reasoningText\":{\"text\":\"Thinking.\",\"signature\":\"ErcBCkgIAhABGAIiQH\"}}},{\"text\":"
    "\"B"
    "onjour \xc3\xa0 "
    "tous\"},{\"toolUse\":{\"toolUseId\":\"tooluse_kZJMlvQmRJ6eAyJE5GIl7Q\",\"name\""
    ":\"top_song\",\"input\":{\"sign\":\"WZPZ\"}}}],\"role\":\"assistant\"}},\"stopReason\":\"tool_"
    "u"
    "se\",\"usage\":{\"inputTokens\":30,\"outputTokens\":628,\"totalTokens\":3158,\"cacheReadInput"
    "Tokens\":2000,\"cacheWriteInputTokens\":500}}";

/* Bedrock invoke body for Claude (the Anthropic message, no usage read from it: the figures are
 * headers); "Hello!" = 6 code points */
static const char INVOKE_BODY[] =
    "{\"id\":\"msg_bdrk_01Q9xZ\",\"type\":\"message\",\"role\":\"assistant\",\"model\":\"claude-3-"
    "5-h"
    "aiku-20241022\",\"content\":[{\"type\":\"text\",\"text\":\"Hello!\"}],\"stop_reason\":\"end_tu"
    "rn\",\"stop_sequence\":null,\"usage\":{\"input_tokens\":999,\"output_tokens\":999}}";

/* Appends one event-stream message (the encoder under test in test_eventstream). */
static void es_add(str_t *s, const char *const *names, const char *const *values, size_t n,
                   const char *payload)
{
    size_t len = 0;
    uint8_t *m = es_encode(names, values, n, (const uint8_t *)payload, strlen(payload), &len);
    assert_non_null(m);
    str_add(s, (const char *)m, len);
    free(m);
}

/* Appends an "event" message of the given type with a JSON payload. */
static void es_event(str_t *s, const char *type, const char *payload)
{
    const char *names[] = {":event-type", ":content-type", ":message-type"};
    const char *values[] = {type, "application/json", "event"};
    es_add(s, names, values, 3, payload);
}

/* Appends an "exception" message. */
static void es_exception(str_t *s, const char *type, const char *payload)
{
    const char *names[] = {":exception-type", ":content-type", ":message-type"};
    const char *values[] = {type, "application/json", "exception"};
    es_add(s, names, values, 3, payload);
}

/* Appends an invoke-with-response-stream chunk carrying one model event (base64). */
static void es_chunk(str_t *s, const char *event)
{
    size_t n = strlen(event);
    size_t b64_len = sodium_base64_ENCODED_LEN(n, sodium_base64_VARIANT_ORIGINAL);
    char *b64 = malloc(b64_len);
    assert_non_null(b64);
    sodium_bin2base64(b64, b64_len, (const unsigned char *)event, n,
                      sodium_base64_VARIANT_ORIGINAL);
    str_t payload = {0};
    str_cat(&payload, "{\"bytes\":\"");
    str_cat(&payload, b64);
    str_cat(&payload, "\",\"p\":\"abcdefghijklmnopqrstuvwxyzABCDEFGH\"}");
    es_event(s, "chunk", payload.p);
    free(payload.p);
    free(b64);
}

/* Bedrock converse-stream (event names and payloads as the runtime sends them, "p" padding
 * included): 12 + 1000 cache reads + 500 cache writes in, 20 out; "Hello" (5) + ", wörld" (7)
 * + tool input {"sign": "WZPZ"} (16) = 28 code points. 9 messages; metadata (8) is the last. */
static str_t build_converse_stream(void)
{
    str_t s = {0};
    str_add(&s, "", 0);
    es_event(
        &s, "messageStart",
        "{\"p\":\"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0\",\"role\":\"assistant\"}");
    es_event(
        &s, "contentBlockDelta",
        "{\"contentBlockIndex\":0,\"delta\":{\"text\":\"Hello\"},\"p\":\"abcdefghijklmnopqrstuvw"
        "xyzABCDEFGHIJKLMNOPQRSTUV\"}");
    es_event(
        &s, "contentBlockDelta",
        "{\"contentBlockIndex\":0,\"delta\":{\"text\":\", w\xc3\xb6rld\"},\"p\":\"abcdefghij\"}");
    es_event(&s, "contentBlockStop",
             "{\"contentBlockIndex\":0,\"p\":\"abcdefghijklmnopqrstuvwxyzABCDEF\"}");
    es_event(
        &s, "contentBlockStart",
        "{\"contentBlockIndex\":1,\"p\":\"abcd\",\"start\":{\"toolUse\":{\"name\":\"top_song\","
        "\"toolUseId\":\"tooluse_kZJMlvQmRJ6eAyJE5GIl7Q\"}}}");
    es_event(
        &s, "contentBlockDelta",
        "{\"contentBlockIndex\":1,\"delta\":{\"toolUse\":{\"input\":\"{\\\"sign\\\": \\\"WZPZ\\\"}"
        "\"}},\"p\":\"ab\"}");
    es_event(&s, "contentBlockStop", "{\"contentBlockIndex\":1,\"p\":\"abcdefghijklm\"}");
    es_event(
        &s, "messageStop",
        "{\"p\":\"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ01234567\",\"stopReason\":"
        "\"tool_use\"}");
    es_event(
        &s, "metadata",
        "{\"metrics\":{\"latencyMs\":697},\"p\":\"abcdefghijklmnopqrstuvwxyzABCDEF\",\"usage\":"
        "{\"inputTokens\":12,\"outputTokens\":20,\"totalTokens\":1532,\"cacheReadInputTokens\""
        ":1000,\"cacheWriteInputTokens\":500}}");
    return s;
}

/* Bedrock invoke-with-response-stream for Claude: Anthropic Messages events in base64 chunks;
 * the last (message_stop) carries amazon-bedrock-invocationMetrics: 25 + 100 cache reads + 50
 * cache writes in, 15 out. The inner message_delta's own figures are not Bedrock's. "Hello" +
 * "!" = 6 code points. 7 messages; the metrics are in the last (6). */
static str_t build_invoke_stream(void)
{
    str_t s = {0};
    str_add(&s, "", 0);
    es_chunk(&s,
             "{\"type\":\"message_start\",\"message\":{\"id\":\"msg_bdrk_01Q9xZ\",\"type\":\"mess"
             "age\",\"role\":\"assistant\",\"model\":\"claude-3-5-haiku-20241022\",\"content\":[],"
             "\"stop_reason\":null,\"stop_sequence\":null,\"usage\":{\"input_tokens\":25,\"outpu"
             "t_tokens\":1}}}");
    es_chunk(&s,
             "{\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\","
             "\"text\":\"\"}}");
    es_chunk(&s, "{\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\","
                 "\"text\":\"Hello\"}}");
    es_chunk(&s, "{\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\","
                 "\"text\":\"!\"}}");
    es_chunk(&s, "{\"type\":\"content_block_stop\",\"index\":0}");
    es_chunk(&s, "{\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\",\"stop_sequen"
                 "ce\":null},\"usage\":{\"output_tokens\":14}}");
    es_chunk(&s,
             "{\"type\":\"message_stop\",\"amazon-bedrock-invocationMetrics\":{\"inputTokenCoun"
             "t\":25,\"outputTokenCount\":15,\"invocationLatency\":1234,\"firstByteLatency\":456,"
             "\"cacheReadInputTokenCount\":100,\"cacheWriteInputTokenCount\":50}}");
    return s;
}

/* A stream of the newer formats and what it holds. */
typedef struct {
    const char *name;        /* for messages */
    usage_format_t fmt;      /* its format */
    const char *text;        /* SSE text ("\n" line ends), or NULL: built by build */
    str_t (*build)(void);    /* builds a binary event stream */
    int64_t in, out, cached; /* the usage */
    int64_t chars;           /* code points of generated content */
    uint32_t events;         /* events (SSE) or messages (event stream) */
    size_t found_ev;         /* index of the event that completes the usage */
    size_t done_ev;          /* index of the event that ends the answer */
} vendor_case_t;

static const vendor_case_t s_vendor_cases[] = {
    {"anthropic", USAGE_ANTHROPIC_MESSAGES, ANTHROPIC_STREAM, NULL, 2125, 89, 2000, 48, 16, 14, 15},
    {"gemini", USAGE_GEMINI, GEMINI_STREAM, NULL, 2048, 32, 1024, 51, 3, 2, 2},
    {"bedrock converse-stream", USAGE_BEDROCK_CONVERSE, NULL, build_converse_stream, 1512, 20, 1000,
     28, 9, 8, 8},
    {"bedrock invoke stream", USAGE_BEDROCK_INVOKE, NULL, build_invoke_stream, 175, 15, 100, 6, 7,
     6, 6},
};

#define N_VENDOR_CASES (sizeof s_vendor_cases / sizeof s_vendor_cases[0])

/* The case's stream with the given line ends (SSE) or as built (event stream). */
static str_t vendor_text(const vendor_case_t *c, const char *eol)
{
    return c->text ? with_eol(c->text, eol) : c->build();
}

/* Checks a whole run of a vendor case. */
static void check_vendor_case(const vendor_case_t *c, const run_t *r, size_t len)
{
    print_message("  %s\n", c->name);
    assert_true(r->u.found);
    assert_true(r->u.done);
    assert_int_equal(r->u.input_tokens, c->in);
    assert_int_equal(r->u.output_tokens, c->out);
    assert_int_equal(r->u.cached_input_tokens, c->cached);
    assert_int_equal(r->u.output_chars, c->chars);
    assert_int_equal(r->u.events, c->events);
    assert_int_equal(r->u.malformed, 0);
    assert_int_equal(r->u.oversize, 0);
    assert_int_equal(r->u.vendor_errors, 0);
    /* Every event is reported, never as usage-only; event-stream messages tile the stream. */
    assert_int_equal(r->log.n, c->events);
    assert_int_equal(usage_only_index(r), -1);
    for (size_t i = 1; i < r->log.n; i++) {
        if (c->text)
            assert_true(r->log.ev[i].start >= r->log.ev[i - 1].end);
        else
            assert_int_equal(r->log.ev[i].start, r->log.ev[i - 1].end);
    }
    if (!c->text) {
        assert_int_equal(r->log.ev[0].start, 0);
        assert_int_equal(r->log.ev[r->log.n - 1].end, len);
    }
}

/* Every stream of the newer formats gives its figures whatever the chunking (and for SSE the
 * line ends: Gemini's own are "\r\n"). */
static void test_vendor_streams_every_split(void **state)
{
    (void)state;
    for (size_t i = 0; i < N_VENDOR_CASES; i++) {
        const vendor_case_t *c = &s_vendor_cases[i];
        for (size_t e = 0; e < (c->text ? 3 : 1); e++) {
            str_t s = vendor_text(c, s_eols[e]);
            run_t r;
            check_every_split(c->fmt, true, MAX_EV_BYTES, s.p, s.len, &r);
            check_vendor_case(c, &r, s.len);
            free(s.p);
        }
    }
}

/* Cut short anywhere: the text so far is counted; found only once the event with the final
 * figures is whole, done only once the last one is. */
static void test_vendor_streams_cut_short(void **state)
{
    (void)state;
    for (size_t i = 0; i < N_VENDOR_CASES; i++) {
        const vendor_case_t *c = &s_vendor_cases[i];
        str_t s = vendor_text(c, "\n"); /* CRLF: a cut before the last "\n" still ends it */
        run_t whole;
        sniff(c->fmt, true, MAX_EV_BYTES, s.p, s.len, &whole);
        uint64_t found_at = whole.log.ev[c->found_ev].end;
        uint64_t done_at = whole.log.ev[c->done_ev].end;
        int64_t prev_chars = 0;
        for (size_t len = 0; len <= s.len; len++) {
            run_t r;
            sniff(c->fmt, true, MAX_EV_BYTES, s.p, len, &r);
            assert_int_equal(r.u.found, len >= found_at);
            assert_int_equal(r.u.done, len >= done_at);
            if (!r.u.found)
                assert_int_equal(r.u.input_tokens + r.u.output_tokens, 0);
            assert_true(r.u.output_chars >= prev_chars);
            assert_int_equal(r.u.malformed, 0);
            prev_chars = r.u.output_chars;
        }
        assert_int_equal(prev_chars, c->chars);
        free(s.p);
    }
}

/* usage_hold_from: every byte before it belongs to an event already reported; for an event
 * stream it is the start of the message not complete yet. */
static void test_vendor_streams_hold_from(void **state)
{
    (void)state;
    uint64_t seed = 3;
    for (size_t i = 0; i < N_VENDOR_CASES; i++) {
        const vendor_case_t *c = &s_vendor_cases[i];
        str_t s = vendor_text(c, "\n");
        usage_sniffer_t *u = usage_new(c->fmt, true, MAX_EV_BYTES);
        assert_non_null(u);
        evlog_t log = {0};
        usage_set_event_cb(u, on_event, &log);
        size_t pos = 0;
        while (pos < s.len) {
            size_t k = 1 + (size_t)(rnd(&seed) % 97);
            k = k < s.len - pos ? k : s.len - pos;
            assert_int_equal(usage_feed(u, (const uint8_t *)s.p + pos, k), 0);
            pos += k;
            uint64_t hold = usage_hold_from(u);
            assert_true(hold <= pos);
            assert_int_equal(hold, log.n ? log.ev[log.n - 1].end : 0);
        }
        usage_finish(u);
        assert_int_equal(usage_hold_from(u), s.len);
        usage_destroy(&u);
        free(s.p);
    }
}

/* Anthropic's message_start output_tokens (1) is a placeholder: never the output count, and
 * never added to message_delta's; newer message_delta figures repeat (and win over) the input
 * counts. */
static void test_anthropic_usage_rules(void **state)
{
    (void)state;
    const char *delta = strstr(ANTHROPIC_STREAM, "event: message_delta");
    assert_non_null(delta);
    run_t r;
    sniff(USAGE_ANTHROPIC_MESSAGES, true, MAX_EV_BYTES, ANTHROPIC_STREAM,
          (size_t)(delta - ANTHROPIC_STREAM), &r);
    assert_false(r.u.found);
    assert_int_equal(r.u.output_tokens, 0);
    assert_int_equal(r.u.input_tokens, 0);

    static const char newer[] =
        "event: message_start\n"
        "data: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"type\":\"message\","
        "\"role\":\"assistant\",\"content\":[],\"usage\":{\"input_tokens\":10,"
        "\"output_tokens\":1}}}\n\n"
        "event: content_block_delta\n"
        "data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\","
        "\"text\":\"ok\"}}\n\n"
        "event: message_delta\n"
        "data: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"},\"usage\":{"
        "\"input_tokens\":12,\"cache_creation_input_tokens\":3,\"cache_read_input_tokens\":4,"
        "\"output_tokens\":7,\"server_tool_use\":{\"web_search_requests\":0}}}\n\n"
        "event: message_stop\n"
        "data: {\"type\":\"message_stop\"}\n\n";
    check_every_split(USAGE_ANTHROPIC_MESSAGES, true, MAX_EV_BYTES, newer, strlen(newer), &r);
    assert_true(r.u.found);
    assert_true(r.u.done);
    assert_int_equal(r.u.input_tokens, 19);
    assert_int_equal(r.u.cached_input_tokens, 4);
    assert_int_equal(r.u.output_tokens, 7);
    assert_int_equal(r.u.output_chars, 2);

    /* A message_delta without its output count: message_start's placeholder does not stand in
     * for it. */
    static const char no_output[] =
        "event: message_start\n"
        "data: {\"type\":\"message_start\",\"message\":{\"usage\":{\"input_tokens\":10,"
        "\"output_tokens\":1}}}\n\n"
        "event: message_delta\n"
        "data: {\"type\":\"message_delta\",\"usage\":{}}\n\n";
    sniff(USAGE_ANTHROPIC_MESSAGES, true, MAX_EV_BYTES, no_output, strlen(no_output), &r);
    assert_false(r.u.found);
    assert_int_equal(r.u.output_tokens, 0);
    assert_int_equal(r.u.malformed, 1);

    /* A message_delta with no input count anywhere cannot be billed: malformed. */
    static const char no_start[] =
        "event: message_delta\n"
        "data: {\"type\":\"message_delta\",\"usage\":{\"output_tokens\":7}}\n\n";
    sniff(USAGE_ANTHROPIC_MESSAGES, true, MAX_EV_BYTES, no_start, strlen(no_start), &r);
    assert_false(r.u.found);
    assert_int_equal(r.u.malformed, 1);
}

/* Gemini: usage is read only at or after a finishReason; a finish chunk without usage waits for
 * a later chunk that has it; CRLF events; errors in the stream. */
static void test_gemini_stream_rules(void **state)
{
    (void)state;
    /* Google's own line ends, checked literally. */
    static const char crlf[] =
        "data: {\"candidates\": [{\"content\": {\"parts\": [{\"text\": \"Hi\"}],\"role\": "
        "\"model\"},\"index\": 0}],\"usageMetadata\": {\"promptTokenCount\": 4,"
        "\"candidatesTokenCount\": 1,\"totalTokenCount\": 5}}\r\n\r\n"
        "data: {\"candidates\": [{\"content\": {\"parts\": [{\"text\": \" there\"}],\"role\": "
        "\"model\"},\"finishReason\": \"STOP\",\"index\": 0}]}\r\n\r\n"
        "data: {\"usageMetadata\": {\"promptTokenCount\": 4,\"candidatesTokenCount\": 2,"
        "\"totalTokenCount\": 6}}\r\n\r\n";
    run_t r;
    check_every_split(USAGE_GEMINI, true, MAX_EV_BYTES, crlf, strlen(crlf), &r);
    assert_true(r.u.found);
    assert_true(r.u.done);
    assert_int_equal(r.u.events, 3);
    assert_int_equal(r.u.input_tokens, 4);
    assert_int_equal(r.u.output_tokens, 2); /* the last figures, not the first chunk's */
    assert_int_equal(r.u.output_chars, 8);
    assert_int_equal(r.log.n, 3);
    /* Without the last event: the finish is there but not the totals. */
    const char *last = strstr(crlf, "data: {\"usageMetadata\"");
    sniff(USAGE_GEMINI, true, MAX_EV_BYTES, crlf, (size_t)(last - crlf), &r);
    assert_false(r.u.found);
    assert_false(r.u.done);
    assert_int_equal(r.u.output_chars, 8);

    /* An error after some text (Google's error shape). */
    static const char err[] =
        "data: {\"candidates\": [{\"content\": {\"parts\": [{\"text\": \"Par\"}],\"role\": "
        "\"model\"},\"index\": 0}],\"usageMetadata\": {\"promptTokenCount\": 4,"
        "\"totalTokenCount\": 4}}\r\n\r\n"
        "data: {\"error\": {\"code\": 503,\"message\": \"The model is overloaded. Please try "
        "again later.\",\"status\": \"UNAVAILABLE\"}}\r\n\r\n";
    check_every_split(USAGE_GEMINI, true, MAX_EV_BYTES, err, strlen(err), &r);
    assert_false(r.u.found);
    assert_false(r.u.done);
    assert_int_equal(r.u.vendor_errors, 1);
    assert_int_equal(r.u.output_chars, 3);

    /* Safety stop with nothing generated: the totals have no candidates count (0 out). */
    static const char blocked[] =
        "data: {\"candidates\": [{\"finishReason\": \"SAFETY\",\"index\": 0,\"safetyRatings\": "
        "[{\"category\": \"HARM_CATEGORY_HARASSMENT\",\"probability\": \"HIGH\",\"blocked\": "
        "true}]}],\"usageMetadata\": {\"promptTokenCount\": 12,\"totalTokenCount\": 12}}\r\n\r\n";
    sniff(USAGE_GEMINI, true, MAX_EV_BYTES, blocked, strlen(blocked), &r);
    assert_true(r.u.found);
    assert_int_equal(r.u.input_tokens, 12);
    assert_int_equal(r.u.output_tokens, 0);
}

/* Bodies of the newer formats: figures, text, cut short anywhere. */
static void test_vendor_bodies(void **state)
{
    (void)state;
    static const struct {
        const char *name;
        usage_format_t fmt;
        const char *text;
        int64_t in, out, cached, chars;
    } b[] = {
        {"anthropic", USAGE_ANTHROPIC_MESSAGES, ANTHROPIC_BODY, 2125, 40, 2000, 12},
        {"gemini", USAGE_GEMINI, GEMINI_BODY, 11, 6, 0, 13},
        {"gemini array", USAGE_GEMINI, GEMINI_ARRAY, 9, 5, 0, 19},
        {"bedrock converse", USAGE_BEDROCK_CONVERSE, CONVERSE_BODY, 2530, 628, 2000, 38},
    };
    for (size_t i = 0; i < sizeof b / sizeof b[0]; i++) {
        print_message("  %s\n", b[i].name);
        run_t r;
        check_every_split(b[i].fmt, false, 1 << 20, b[i].text, strlen(b[i].text), &r);
        assert_true(r.u.found);
        assert_true(r.u.done);
        assert_int_equal(r.u.input_tokens, b[i].in);
        assert_int_equal(r.u.output_tokens, b[i].out);
        assert_int_equal(r.u.cached_input_tokens, b[i].cached);
        assert_int_equal(r.u.output_chars, b[i].chars);
        assert_int_equal(r.u.malformed, 0);
        assert_int_equal(r.u.vendor_errors, 0);
        assert_int_equal(r.log.n, 0);
        /* Cut short anywhere before its last bracket: never found nor done, one malformed. */
        size_t whole_at = strlen(b[i].text);
        while (b[i].text[whole_at - 1] != '}' && b[i].text[whole_at - 1] != ']')
            whole_at--;
        for (size_t len = 1; len < whole_at; len++) {
            sniff(b[i].fmt, false, 1 << 20, b[i].text, len, &r);
            assert_false(r.u.found);
            assert_false(r.u.done);
            assert_int_equal(r.u.malformed, 1);
        }
    }
}

/* A Gemini array cut short counts the text of its whole elements; empty and odd arrays. */
static void test_gemini_array_body(void **state)
{
    (void)state;
    const char *second = strstr(GEMINI_ARRAY, ",\r\n{");
    assert_non_null(second);
    size_t first_end = (size_t)(second - GEMINI_ARRAY);
    size_t n = strlen(GEMINI_ARRAY);
    for (size_t len = 1; len < n; len++) {
        run_t r;
        sniff(USAGE_GEMINI, false, 1 << 20, GEMINI_ARRAY, len, &r);
        assert_false(r.u.found);
        assert_false(r.u.done);
        assert_int_equal(r.u.malformed, 1);
        int64_t want = len < first_end - 1 ? 0 : len < n - 2 ? 9 : 19;
        if (r.u.output_chars != want)
            fail_msg("cut at %zu: %lld chars, want %lld", len, (long long)r.u.output_chars,
                     (long long)want);
    }
    static const struct {
        const char *text;
        bool done;
        uint32_t malformed;
        bool found;
    } c[] = {
        {"[]", true, 0, false},
        {" [ ] \r\n", true, 0, false},
        {"[", false, 1, false},
        {"[{\"usageMetadata\":{\"promptTokenCount\":3}}] x", false, 1, false},
        {"[{\"usageMetadata\":{\"promptTokenCount\":3}} {}]", false, 1, false},
        {"[{\"usageMetadata\":{\"promptTokenCount\":3}},]", false, 1, false},
        {"[1]", false, 1, false},
        {"[{\"usageMetadata\":{\"promptTokenCount\":3}},{\"candidates\":[]}]", true, 0, true},
        {"[{\"usageMetadata\":{\"promptTokenCount\":3}},{\"usageMetadata\":{}}]", true, 1, false},
        {"[{\"error\":{\"code\":429,\"message\":\"Resource has been exhausted\",\"status\":"
         "\"RESOURCE_EXHAUSTED\"}}]",
         true, 0, false},
    };
    for (size_t i = 0; i < sizeof c / sizeof c[0]; i++) {
        run_t r;
        sniff(USAGE_GEMINI, false, 1 << 20, c[i].text, strlen(c[i].text), &r);
        print_message("  %s\n", c[i].text);
        assert_int_equal(r.u.done, c[i].done);
        assert_int_equal(r.u.malformed, c[i].malformed);
        assert_int_equal(r.u.found, c[i].found);
    }
}

/* Gives the sniffer one header. */
static void header(usage_sniffer_t *s, const char *name, const char *value)
{
    usage_header(s, name, strlen(name), value, strlen(value));
}

/* Bedrock invoke: the figures are the x-amzn-bedrock-*-token-count headers. */
static void test_bedrock_invoke_headers(void **state)
{
    (void)state;
    usage_sniffer_t *s = usage_new(USAGE_BEDROCK_INVOKE, false, 1 << 20);
    assert_non_null(s);
    header(s, "Content-Type", "application/json");
    header(s, "X-Amzn-Bedrock-Input-Token-Count", "25");
    assert_false(usage_get(s)->found);
    header(s, "x-amzn-bedrock-output-token-count", " 15 ");
    assert_true(usage_get(s)->found); /* both counts given: found before the body */
    header(s, "X-AMZN-BEDROCK-CACHE-READ-INPUT-TOKEN-COUNT", "100");
    header(s, "x-amzn-bedrock-cache-write-input-token-count", "50");
    header(s, "x-amzn-bedrock-invocation-latency", "1234");
    assert_int_equal(usage_feed(s, (const uint8_t *)INVOKE_BODY, strlen(INVOKE_BODY)), 0);
    usage_finish(s);
    const usage_t *u = usage_get(s);
    assert_true(u->found);
    assert_true(u->done);
    assert_int_equal(u->input_tokens, 175);
    assert_int_equal(u->cached_input_tokens, 100);
    assert_int_equal(u->output_tokens, 15); /* the headers, not the body's usage */
    assert_int_equal(u->output_chars, 6);
    assert_int_equal(u->malformed, 0);
    usage_destroy(&s);

    /* Header cases: what is given, and whether that is found (and how much is malformed). */
    static const struct {
        const char *in, *out, *cache_read;
        bool found;
        int64_t in_tokens;
        uint32_t malformed;
    } c[] = {
        {"25", "15", NULL, true, 25, 0},
        {"0", "0", NULL, true, 0, 0},
        {"25", NULL, NULL, false, 0, 0},
        {NULL, "15", NULL, false, 0, 0},
        {"25", "abc", NULL, false, 0, 1},
        {"-1", "15", NULL, false, 0, 1},
        {"+1", "15", NULL, false, 0, 1},
        {"1.5", "15", NULL, false, 0, 1},
        {"", "15", NULL, false, 0, 1},
        {"   ", "15", NULL, false, 0, 1},
        {"1 2", "15", NULL, false, 0, 1},
        {"1234567890123456789", "15", NULL, false, 0, 1}, /* 19 digits */
        {"999999999999999999", "15", NULL, true, 999999999999999999, 0},
        {"25", "15", "x", true, 25, 1}, /* a bad cache count is not counted */
        {"25", "15", "7", true, 32, 0},
    };
    for (size_t i = 0; i < sizeof c / sizeof c[0]; i++) {
        s = usage_new(USAGE_BEDROCK_INVOKE, false, 1 << 20);
        assert_non_null(s);
        if (c[i].in)
            header(s, "x-amzn-bedrock-input-token-count", c[i].in);
        if (c[i].out)
            header(s, "x-amzn-bedrock-output-token-count", c[i].out);
        if (c[i].cache_read)
            header(s, "x-amzn-bedrock-cache-read-input-token-count", c[i].cache_read);
        usage_finish(s); /* no body at all */
        u = usage_get(s);
        if (u->found != c[i].found || u->input_tokens != c[i].in_tokens ||
            u->malformed != c[i].malformed)
            fail_msg("case %zu: found %d in %lld malformed %u", i, (int)u->found,
                     (long long)u->input_tokens, u->malformed);
        assert_false(u->done);
        usage_destroy(&s);
    }

    /* A later bad copy of a header undoes what the good one gave. */
    s = usage_new(USAGE_BEDROCK_INVOKE, false, 1 << 20);
    header(s, "x-amzn-bedrock-input-token-count", "25");
    header(s, "x-amzn-bedrock-output-token-count", "15");
    header(s, "x-amzn-bedrock-output-token-count", "n/a");
    assert_false(usage_get(s)->found);
    assert_int_equal(usage_get(s)->output_tokens, 0);
    /* Cut short: the headers' figures stand, the body is not done. */
    header(s, "x-amzn-bedrock-output-token-count", "15");
    assert_int_equal(usage_feed(s, (const uint8_t *)INVOKE_BODY, 20), 0);
    usage_finish(s);
    assert_true(usage_get(s)->found);
    assert_false(usage_get(s)->done);
    header(s, "x-amzn-bedrock-input-token-count", "1"); /* after the end: ignored */
    assert_int_equal(usage_get(s)->input_tokens, 25);
    usage_destroy(&s);

    /* Other formats, and the invoke stream (figures in the stream), ignore the headers. */
    static const usage_format_t others[] = {USAGE_OPENAI_CHAT, USAGE_ANTHROPIC_MESSAGES,
                                            USAGE_GEMINI, USAGE_BEDROCK_CONVERSE};
    for (size_t i = 0; i < sizeof others / sizeof others[0] + 1; i++) {
        bool invoke_stream = i == sizeof others / sizeof others[0];
        s = usage_new(invoke_stream ? USAGE_BEDROCK_INVOKE : others[i], invoke_stream, 4096);
        assert_non_null(s);
        header(s, "x-amzn-bedrock-input-token-count", "25");
        header(s, "x-amzn-bedrock-output-token-count", "15");
        assert_false(usage_get(s)->found);
        usage_destroy(&s);
    }
    usage_header(NULL, "a", 1, "b", 1);
}

/* Vendor errors inside streams of the newer formats, and as bodies. */
static void test_vendor_errors_newer_formats(void **state)
{
    (void)state;
    static const char anthropic[] =
        "event: message_start\n"
        "data: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"type\":\"message\","
        "\"role\":\"assistant\",\"content\":[],\"usage\":{\"input_tokens\":10,"
        "\"output_tokens\":1}}}\n\n"
        "event: content_block_delta\n"
        "data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\","
        "\"text\":\"Hel\"}}\n\n"
        "event: error\n"
        "data: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":"
        "\"Overloaded\"}}\n\n";
    run_t r;
    check_every_split(USAGE_ANTHROPIC_MESSAGES, true, MAX_EV_BYTES, anthropic, strlen(anthropic),
                      &r);
    assert_false(r.u.found);
    assert_false(r.u.done);
    assert_int_equal(r.u.vendor_errors, 1);
    assert_int_equal(r.u.output_chars, 3);
    assert_int_equal(r.u.events, 3);

    /* converse-stream: a throttling exception after some text. */
    str_t s = {0};
    str_add(&s, "", 0);
    es_event(&s, "messageStart", "{\"p\":\"abc\",\"role\":\"assistant\"}");
    es_event(&s, "contentBlockDelta", "{\"contentBlockIndex\":0,\"delta\":{\"text\":\"Hel\"}}");
    es_exception(&s, "throttlingException",
                 "{\"message\":\"Too many requests, please wait before trying again.\"}");
    check_every_split(USAGE_BEDROCK_CONVERSE, true, MAX_EV_BYTES, s.p, s.len, &r);
    assert_false(r.u.found);
    assert_false(r.u.done);
    assert_int_equal(r.u.vendor_errors, 1);
    assert_int_equal(r.u.output_chars, 3);
    assert_int_equal(r.u.events, 3);
    assert_int_equal(r.u.malformed, 0);
    free(s.p);

    /* invoke stream: a model stream error. */
    s = (str_t){0};
    str_add(&s, "", 0);
    es_chunk(&s, "{\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\","
                 "\"text\":\"Hi\"}}");
    es_exception(&s, "modelStreamErrorException",
                 "{\"message\":\"Model stream error\",\"originalStatusCode\":529,"
                 "\"originalMessage\":\"Overloaded\"}");
    check_every_split(USAGE_BEDROCK_INVOKE, true, MAX_EV_BYTES, s.p, s.len, &r);
    assert_false(r.u.found);
    assert_int_equal(r.u.vendor_errors, 1);
    assert_int_equal(r.u.output_chars, 2);
    free(s.p);

    /* Error bodies. */
    static const struct {
        usage_format_t fmt;
        const char *body;
    } b[] = {
        {USAGE_ANTHROPIC_MESSAGES,
         "{\"type\":\"error\",\"error\":{\"type\":\"authentication_error"
         "\",\"message\":\"invalid x-api-key\"},\"request_id\":\"req_1\"}"},
        {USAGE_GEMINI,
         "{\"error\":{\"code\":400,\"message\":\"API key not valid. Please pass a valid "
         "API key.\",\"status\":\"INVALID_ARGUMENT\"}}"},
        {USAGE_BEDROCK_CONVERSE, "{\"message\":\"The security token included in the request is "
                                 "invalid.\"}"},
        {USAGE_BEDROCK_INVOKE, "{\"message\":\"Malformed input request: extraneous key [stream] is "
                               "not permitted, please reformat your input and try again.\"}"},
    };
    for (size_t i = 0; i < sizeof b / sizeof b[0]; i++) {
        sniff(b[i].fmt, false, 1 << 20, b[i].body, strlen(b[i].body), &r);
        assert_false(r.u.found);
        assert_true(r.u.done);
        assert_int_equal(r.u.vendor_errors, 1);
        assert_int_equal(r.u.malformed, 0);
    }
}

/* Malformed events of the newer formats are counted and skipped; the stream goes on. */
static void test_malformed_newer_formats(void **state)
{
    (void)state;
    static const char anthropic[] =
        "event: message_start\n"
        "data: {\"type\":\"message_start\",\"message\":{\"usage\":{\"input_tokens\":\"10\"}}}\n\n"
        "event: content_block_delta\n"
        "data: {\"type\":\"content_block_delta\",\"delta\":{\"text\":\"a\"\n\n" /* cut */
        "event: message_start\n"
        "data: {\"type\":\"message_start\",\"message\":{\"usage\":{\"input_tokens\":10,"
        "\"output_tokens\":1}}}\n\n"
        "data: [DONE]\n\n" /* not Anthropic's: not JSON */
        "event: message_delta\n"
        "data: {\"type\":\"message_delta\",\"usage\":{\"output_tokens\":-3}}\n\n"
        "event: message_delta\n"
        "data: {\"type\":\"message_delta\",\"usage\":{\"output_tokens\":5}}\n\n"
        "event: message_stop\n"
        "data: {\"type\":\"message_stop\"}\n\n";
    run_t r;
    check_every_split(USAGE_ANTHROPIC_MESSAGES, true, MAX_EV_BYTES, anthropic, strlen(anthropic),
                      &r);
    assert_true(r.u.found);
    assert_true(r.u.done);
    assert_int_equal(r.u.input_tokens, 10);
    assert_int_equal(r.u.output_tokens, 5);
    assert_int_equal(r.u.malformed, 4);
    assert_int_equal(r.u.events, 7);

    /* Event-stream messages that cannot be read, between good ones. */
    str_t s = {0};
    str_add(&s, "", 0);
    es_event(&s, "contentBlockDelta", "{\"contentBlockIndex\":0,\"delta\":{\"text\":\"ab\"}}");
    es_event(&s, "contentBlockDelta", "not json");
    es_add(&s, NULL, NULL, 0, "{\"contentBlockIndex\":0,\"delta\":{\"text\":\"zz\"}}");
    es_event(&s, "metadata", "{\"usage\":{\"inputTokens\":\"12\",\"outputTokens\":3}}");
    es_event(&s, "metadata", "{\"metrics\":{\"latencyMs\":1}}");
    es_event(&s, "contentBlockDelta", "[1]");
    es_event(&s, "someFutureEvent", "{\"x\":1}");
    es_event(&s, "metadata",
             "{\"usage\":{\"inputTokens\":12,\"outputTokens\":3,"
             "\"totalTokens\":15},\"metrics\":{\"latencyMs\":1}}");
    check_every_split(USAGE_BEDROCK_CONVERSE, true, MAX_EV_BYTES, s.p, s.len, &r);
    assert_true(r.u.found);
    assert_true(r.u.done);
    assert_int_equal(r.u.input_tokens, 12);
    assert_int_equal(r.u.output_chars, 2);
    assert_int_equal(r.u.malformed, 5);
    assert_int_equal(r.u.events, 8);
    free(s.p);

    /* Invoke chunks whose bytes are not base64, not JSON, or missing. */
    s = (str_t){0};
    str_add(&s, "", 0);
    es_event(&s, "chunk", "{\"bytes\":\"not base64!\"}");
    es_event(&s, "chunk", "{\"bytes\":\"bm90IGpzb24=\"}"); /* "not json" */
    es_event(&s, "chunk", "{\"p\":\"abc\"}");
    es_event(&s, "chunk", "{\"bytes\":42}");
    es_chunk(&s, "{\"type\":\"message_stop\",\"amazon-bedrock-invocationMetrics\":{"
                 "\"inputTokenCount\":-1,\"outputTokenCount\":15}}");
    es_chunk(&s, "{\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":"
                 "\"text_delta\",\"text\":\"ok\"}}");
    es_chunk(&s, "{\"type\":\"message_stop\",\"amazon-bedrock-invocationMetrics\":{"
                 "\"inputTokenCount\":7,\"outputTokenCount\":1,\"invocationLatency\":9,"
                 "\"firstByteLatency\":3}}");
    check_every_split(USAGE_BEDROCK_INVOKE, true, MAX_EV_BYTES, s.p, s.len, &r);
    assert_true(r.u.found);
    assert_int_equal(r.u.input_tokens, 7);
    assert_int_equal(r.u.cached_input_tokens, 0);
    assert_int_equal(r.u.output_tokens, 1);
    assert_int_equal(r.u.output_chars, 2);
    assert_int_equal(r.u.malformed, 5);
    free(s.p);
}

/* A frame whose CRC fails: counted malformed once, nothing after it is read, and the feeds
 * never fail (the relay goes on). */
static void test_bad_frame_stops_reading(void **state)
{
    (void)state;
    for (size_t i = 0; i < N_VENDOR_CASES; i++) {
        const vendor_case_t *c = &s_vendor_cases[i];
        if (c->text)
            continue;
        str_t s = c->build();
        run_t whole;
        sniff(c->fmt, true, MAX_EV_BYTES, s.p, s.len, &whole);
        /* Damage the third message: its prelude, its payload, its CRC. */
        const usage_event_t *third = &whole.log.ev[2];
        uint64_t spots[] = {third->start + 2, third->start + 9, (third->start + third->end) / 2,
                            third->end - 1};
        for (size_t k = 0; k < sizeof spots / sizeof spots[0]; k++) {
            s.p[spots[k]] ^= 0x20;
            run_t r;
            check_every_split(c->fmt, true, MAX_EV_BYTES, s.p, s.len, &r);
            assert_int_equal(r.emsgsize, 0);
            assert_int_equal(r.u.malformed, 1);
            assert_int_equal(r.u.events, 2);
            assert_int_equal(r.log.n, 2);
            assert_false(r.u.found);
            assert_false(r.u.done);
            /* Nothing is held back once the reading stopped. */
            usage_sniffer_t *u = usage_new(c->fmt, true, MAX_EV_BYTES);
            assert_int_equal(usage_feed(u, (const uint8_t *)s.p, s.len), 0);
            assert_int_equal(usage_hold_from(u), s.len);
            usage_destroy(&u);
            s.p[spots[k]] ^= 0x20;
        }
        free(s.p);
    }
}

/* An event-stream message over max_bytes is stepped over unread (one -EMSGSIZE); the rest is
 * read. */
static void test_event_stream_message_limit(void **state)
{
    (void)state;
    str_t s = {0};
    str_add(&s, "", 0);
    es_event(&s, "contentBlockDelta", "{\"contentBlockIndex\":0,\"delta\":{\"text\":\"abc\"}}");
    str_t big = {0};
    str_cat(&big, "{\"contentBlockIndex\":0,\"delta\":{\"text\":\"lost\"},\"p\":\"");
    str_fill(&big, 'x', 3000);
    str_cat(&big, "\"}");
    es_event(&s, "contentBlockDelta", big.p);
    es_event(&s, "metadata", "{\"usage\":{\"inputTokens\":12,\"outputTokens\":3}}");
    run_t r;
    check_every_split(USAGE_BEDROCK_CONVERSE, true, 1024, s.p, s.len, &r);
    assert_true(r.u.found);
    assert_int_equal(r.u.output_chars, 3);
    assert_int_equal(r.u.oversize, 1);
    assert_int_equal(r.emsgsize, 1);
    assert_int_equal(r.u.events, 2);
    assert_int_equal(r.u.malformed, 0);
    /* At the limit it is read. */
    check_every_split(USAGE_BEDROCK_CONVERSE, true, MAX_EV_BYTES, s.p, s.len, &r);
    assert_int_equal(r.u.output_chars, 7);
    assert_int_equal(r.u.oversize, 0);
    free(big.p);
    free(s.p);
}

/* Constructors of the newer formats; a sniffer destroyed mid-message frees what it holds. */
static void test_newer_formats_api(void **state)
{
    (void)state;
    assert_null(usage_new((usage_format_t)(USAGE_BEDROCK_INVOKE + 1), true, 1024));
    for (int f = USAGE_ANTHROPIC_MESSAGES; f <= USAGE_BEDROCK_INVOKE; f++) {
        for (int streaming = 0; streaming < 2; streaming++) {
            usage_sniffer_t *s = usage_new((usage_format_t)f, streaming, 4096);
            assert_non_null(s);
            assert_int_equal(usage_feed(s, (const uint8_t *)"\0\0\0\x7b\0\0\0", 7), 0);
            assert_int_equal(usage_hold_from(s), streaming ? 0 : 7);
            assert_int_equal(usage_feed(s, NULL, 1), -EINVAL);
            usage_destroy(&s);
            assert_null(s);
        }
    }
    /* Finished mid-message: nothing read, nothing held, later feeds refused. */
    str_t c = build_converse_stream();
    const uint8_t *p = (const uint8_t *)c.p;
    size_t first = (size_t)p[2] << 8 | p[3]; /* the first message's length (< 64 KiB) */
    usage_sniffer_t *s = usage_new(USAGE_BEDROCK_CONVERSE, true, 4096);
    assert_int_equal(usage_feed(s, p, first + 20), 0);
    assert_int_equal(usage_get(s)->events, 1);
    assert_int_equal(usage_hold_from(s), first);
    usage_finish(s);
    assert_int_equal(usage_hold_from(s), first + 20);
    assert_int_equal(usage_feed(s, p + first + 20, 10), -EINVAL);
    assert_int_equal(usage_get(s)->malformed, 0);
    usage_destroy(&s);
    free(c.p);
}

/* ---- API edges ---- */

/* Constructor checks, NULL-safe destroy, feeds after the end, the hold offset. */
static void test_api_edges(void **state)
{
    (void)state;
    assert_null(usage_new(USAGE_OPENAI_CHAT, true, 0));
    assert_null(usage_new(USAGE_OPENAI_CHAT, false, 0));
    assert_null(usage_new((usage_format_t)99, true, 1024));
    assert_null(usage_new((usage_format_t)-1, false, 1024));
    usage_destroy(NULL);
    usage_sniffer_t *s = NULL;
    usage_destroy(&s);
    assert_non_null(usage_get(NULL));
    assert_false(usage_get(NULL)->found);
    assert_int_equal(usage_feed(NULL, (const uint8_t *)"x", 1), -EINVAL);
    usage_finish(NULL);
    usage_set_event_cb(NULL, NULL, NULL);
    assert_int_equal(usage_hold_from(NULL), 0);

    /* Streams: the hold offset is the start of the event not complete yet. */
    s = usage_new(USAGE_OPENAI_CHAT, true, 4096);
    assert_non_null(s);
    assert_int_equal(usage_feed(s, NULL, 0), 0);
    assert_int_equal(usage_feed(s, NULL, 1), -EINVAL);
    const char *second = strstr(CHAT_USAGE + 1, "data: ");
    size_t first_len = (size_t)(second - CHAT_USAGE);
    assert_int_equal(usage_feed(s, (const uint8_t *)CHAT_USAGE, first_len + 10), 0);
    assert_int_equal(usage_hold_from(s), first_len);
    assert_int_equal(usage_get(s)->events, 1);
    usage_finish(s);
    usage_finish(s); /* twice is fine */
    assert_int_equal(usage_feed(s, (const uint8_t *)"data: x\n\n", 9), -EINVAL);
    assert_int_equal(usage_get(s)->events, 1);
    usage_destroy(&s);
    assert_null(s);

    /* Bodies: nothing is held; a sniffer destroyed half-way frees what it gathered. */
    s = usage_new(USAGE_OPENAI_RESPONSES, false, 4096);
    assert_non_null(s);
    assert_int_equal(usage_feed(s, (const uint8_t *)"{\"usage\":", 9), 0);
    assert_int_equal(usage_hold_from(s), 9);
    assert_false(usage_get(s)->found);
    usage_destroy(&s);

    /* A stream sniffer destroyed mid-event. */
    s = usage_new(USAGE_OPENAI_CHAT, true, 4096);
    assert_non_null(s);
    assert_int_equal(usage_feed(s, (const uint8_t *)"data: {\"choi", 12), 0);
    usage_destroy(&s);
}

/* ---- The billing figures rule (usage_bill) ---- */

/* One case of the rule: what was seen, the vendor status, the body size, what is billed. */
typedef struct {
    const char *name;
    bool have_u;   /* pass a usage_t (else NULL) */
    bool found;    /* u->found */
    int64_t in, cached, out, chars; /* u's figures and output_chars */
    int status;
    int64_t body;
    int64_t want_in, want_cached, want_out;
    bool want_est;
} bill_case_t;

static const bill_case_t s_bill_cases[] = {
    /* The vendor's own figures win, whatever the status, and are never estimates. */
    {"found 200", true, true, 19, 6, 10, 15, 200, 400, 19, 6, 10, false},
    {"found 500", true, true, 19, 6, 10, 15, 500, 400, 19, 6, 10, false},
    {"found 429", true, true, 7, 0, 0, 0, 429, 400, 7, 0, 0, false},
    {"found status 0", true, true, 3, 1, 2, 99, 0, 400, 3, 1, 2, false},
    {"found zeros", true, true, 0, 0, 0, 40, 200, 400, 0, 0, 0, false},
    {"found huge", true, true, INT64_MAX, INT64_MAX - 1, INT64_MAX, 0, 200, 8, INT64_MAX,
     INT64_MAX - 1, INT64_MAX, false},
    /* No figures and no success: nothing, not an estimate. */
    {"400", true, false, 0, 0, 0, 40, 400, 400, 0, 0, 0, false},
    {"429", true, false, 0, 0, 0, 40, 429, 400, 0, 0, 0, false},
    {"500", true, false, 0, 0, 0, 40, 500, 400, 0, 0, 0, false},
    {"503", true, false, 0, 0, 0, 40, 503, 400, 0, 0, 0, false},
    {"199", true, false, 0, 0, 0, 40, 199, 400, 0, 0, 0, false},
    {"300", true, false, 0, 0, 0, 40, 300, 400, 0, 0, 0, false},
    {"304", true, false, 0, 0, 0, 40, 304, 400, 0, 0, 0, false},
    {"status 0", true, false, 0, 0, 0, 40, 0, 400, 0, 0, 0, false},
    {"status -1", true, false, 0, 0, 0, 40, -1, 400, 0, 0, 0, false},
    /* A success without figures: estimated, ceil(body / 4) in, ceil(chars / 4) out. */
    {"200 estimate", true, false, 0, 0, 0, 15, 200, 401, 101, 0, 4, true},
    {"200 exact quarters", true, false, 0, 0, 0, 16, 200, 400, 100, 0, 4, true},
    {"204", true, false, 0, 0, 0, 1, 204, 1, 1, 0, 1, true},
    {"299", true, false, 0, 0, 0, 2, 299, 3, 1, 0, 1, true},
    {"200 zero body", true, false, 0, 0, 0, 0, 200, 0, 0, 0, 0, true},
    {"200 negative body", true, false, 0, 0, 0, 5, 200, -8, 0, 0, 2, true},
    {"200 partial figures ignored", true, false, 50, 10, 20, 9, 200, 12, 3, 0, 3, true},
    {"200 huge", true, false, 0, 0, 0, INT64_MAX, 200, INT64_MAX, INT64_MAX / 4 + 1, 0,
     INT64_MAX / 4 + 1, true},
    {"200 huge multiple of 4", true, false, 0, 0, 0, INT64_MAX - 3, 200, INT64_MAX - 3,
     (INT64_MAX - 3) / 4, 0, (INT64_MAX - 3) / 4, true},
    /* Nothing seen at all (u == NULL). */
    {"NULL 200", false, false, 0, 0, 0, 0, 200, 9, 3, 0, 0, true},
    {"NULL 502", false, false, 0, 0, 0, 0, 502, 9, 0, 0, 0, false},
    {"NULL status 0", false, false, 0, 0, 0, 0, 0, 9, 0, 0, 0, false},
};

/* Every case of the table; the output is fully written whatever it held before. */
static void test_bill_rule_table(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof s_bill_cases / sizeof s_bill_cases[0]; i++) {
        const bill_case_t *c = &s_bill_cases[i];
        usage_t u;
        memset(&u, 0, sizeof u);
        u.found = c->found;
        u.input_tokens = c->in;
        u.cached_input_tokens = c->cached;
        u.output_tokens = c->out;
        u.output_chars = c->chars;
        usage_bill_t b;
        memset(&b, 0x5a, sizeof b);
        usage_bill(c->have_u ? &u : NULL, c->status, c->body, &b);
        if (b.input_tokens != c->want_in || b.cached_tokens != c->want_cached ||
            b.output_tokens != c->want_out || b.estimated != c->want_est)
            fail_msg("%s: got in %lld cached %lld out %lld est %d; want %lld %lld %lld %d",
                     c->name, (long long)b.input_tokens, (long long)b.cached_tokens,
                     (long long)b.output_tokens, (int)b.estimated, (long long)c->want_in,
                     (long long)c->want_cached, (long long)c->want_out, (int)c->want_est);
    }
}

/* The rule on what the sniffer read: a whole stream bills the vendor's figures; the same stream
 * cut before its usage chunk bills the estimate from the content seen ("" + "Hello" + " wörld"
 * + " 世界!" = 15 code points → 4 tokens). */
static void test_bill_rule_from_sniffer(void **state)
{
    (void)state;
    usage_bill_t b;
    usage_sniffer_t *s = usage_new(USAGE_OPENAI_CHAT, true, 65536);
    assert_non_null(s);
    assert_int_equal(usage_feed(s, (const uint8_t *)CHAT_USAGE, strlen(CHAT_USAGE)), 0);
    usage_finish(s);
    usage_bill(usage_get(s), 200, 1000, &b);
    assert_int_equal(b.input_tokens, 19);
    assert_int_equal(b.cached_tokens, 6);
    assert_int_equal(b.output_tokens, 10);
    assert_false(b.estimated);
    usage_destroy(&s);

    const char *usage_chunk = strstr(CHAT_USAGE, "\"choices\":[],");
    assert_non_null(usage_chunk);
    size_t cut = 0;
    for (const char *p = CHAT_USAGE; (p = strstr(p, "data: ")) && p < usage_chunk; p++)
        cut = (size_t)(p - CHAT_USAGE);
    s = usage_new(USAGE_OPENAI_CHAT, true, 65536);
    assert_non_null(s);
    assert_int_equal(usage_feed(s, (const uint8_t *)CHAT_USAGE, cut), 0);
    usage_finish(s);
    assert_false(usage_get(s)->found);
    usage_bill(usage_get(s), 200, 1001, &b);
    assert_int_equal(b.input_tokens, 251);
    assert_int_equal(b.cached_tokens, 0);
    assert_int_equal(b.output_tokens, 4);
    assert_true(b.estimated);
    /* The same cut stream under a failed status bills nothing. */
    usage_bill(usage_get(s), 502, 1001, &b);
    assert_int_equal(b.input_tokens + b.cached_tokens + b.output_tokens, 0);
    assert_false(b.estimated);
    usage_destroy(&s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_streams_every_split),
        cmocka_unit_test(test_azure_filter_chunk_is_not_usage),
        cmocka_unit_test(test_usage_chunk_offsets_exact),
        cmocka_unit_test(test_relay_drops_usage_chunk),
        cmocka_unit_test(test_interrupted_streams),
        cmocka_unit_test(test_bodies),
        cmocka_unit_test(test_body_limit),
        cmocka_unit_test(test_stream_event_limit),
        cmocka_unit_test(test_malformed_events),
        cmocka_unit_test(test_vendor_errors_in_streams),
        cmocka_unit_test(test_vendor_streams_every_split),
        cmocka_unit_test(test_vendor_streams_cut_short),
        cmocka_unit_test(test_vendor_streams_hold_from),
        cmocka_unit_test(test_anthropic_usage_rules),
        cmocka_unit_test(test_gemini_stream_rules),
        cmocka_unit_test(test_vendor_bodies),
        cmocka_unit_test(test_gemini_array_body),
        cmocka_unit_test(test_bedrock_invoke_headers),
        cmocka_unit_test(test_vendor_errors_newer_formats),
        cmocka_unit_test(test_malformed_newer_formats),
        cmocka_unit_test(test_bad_frame_stops_reading),
        cmocka_unit_test(test_event_stream_message_limit),
        cmocka_unit_test(test_newer_formats_api),
        cmocka_unit_test(test_api_edges),
        cmocka_unit_test(test_bill_rule_table),
        cmocka_unit_test(test_bill_rule_from_sniffer),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
