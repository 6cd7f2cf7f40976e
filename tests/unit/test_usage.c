/* Unit tests for lib/usage: token figures read from vendor-shaped OpenAI and Azure OpenAI
 * streams and bodies, the same whatever the chunking and line endings; the usage-only chunk's
 * offsets (cut it out and the stream stays valid, without usage); missing usage, limits,
 * malformed and error events; the billing figures rule (usage_bill). */
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

/* A body over max_bytes is not read: one -EMSGSIZE, not found, no crash; at the limit it is. */
static void test_body_limit(void **state)
{
    (void)state;
    size_t n = strlen(CHAT_BODY);
    run_t r;
    check_every_split(USAGE_OPENAI_CHAT, false, n, CHAT_BODY, n, &r);
    assert_true(r.u.found);
    assert_int_equal(r.emsgsize, 0);

    check_every_split(USAGE_OPENAI_CHAT, false, n - 1, CHAT_BODY, n, &r);
    assert_false(r.u.found);
    assert_false(r.u.done);
    assert_int_equal(r.u.oversize, 1);
    assert_int_equal(r.u.malformed, 0);
    assert_int_equal(r.emsgsize, 1);

    sniff(USAGE_OPENAI_RESPONSES, false, 1, RESPONSES_BODY, strlen(RESPONSES_BODY), &r);
    assert_false(r.u.found);
    assert_int_equal(r.u.oversize, 1);

    /* A big body (an embeddings answer of 4 MiB) against a 1 MiB limit. */
    str_t big = {0};
    str_cat(&big, "{\"object\":\"list\",\"data\":[{\"object\":\"embedding\",\"index\":0,"
                  "\"embedding\":\"");
    str_fill(&big, 'A', 4u << 20);
    str_cat(&big, "\"}],\"model\":\"text-embedding-3-small\","
                  "\"usage\":{\"prompt_tokens\":8,\"total_tokens\":8}}");
    sniff(USAGE_OPENAI_EMBEDDINGS, false, 1u << 20, big.p, big.len, &r);
    assert_false(r.u.found);
    assert_int_equal(r.u.oversize, 1);
    sniff(USAGE_OPENAI_EMBEDDINGS, false, 8u << 20, big.p, big.len, &r);
    assert_true(r.u.found);
    assert_int_equal(r.u.input_tokens, 8);
    free(big.p);
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
        cmocka_unit_test(test_api_edges),
        cmocka_unit_test(test_bill_rule_table),
        cmocka_unit_test(test_bill_rule_from_sniffer),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
