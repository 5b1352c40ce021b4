// A multi-turn tool loop run by the Vercel AI SDK itself (openai-compatible provider, as OpenCode uses
// it): the SDK executes the tool and sends the next turn, echoing each earlier tool call with only its
// `id`, `type` and `function`. Two user turns, so the second turn replays the first turn's calls.
// With API `responses` the SDK's own OpenAI provider drives /responses instead (stateless: store false,
// so earlier calls come back as function_call items with their call_id).
// With an EFFORT (low, medium, ...) the SDK asks for reasoning: `reasoningEffort` on the openai-compatible
// provider (sent as `reasoning_effort`); on /responses `reasoningEffort` plus `forceReasoning`, without which
// the SDK drops reasoning for a model id it does not know as an OpenAI reasoning model.
// Usage: node tool_loop.mjs BASE_URL KEY MODEL stream|generate [chat|responses] [EFFORT]
import { createOpenAI } from '@ai-sdk/openai';
import { createOpenAICompatible } from '@ai-sdk/openai-compatible';
import { generateText, jsonSchema, stepCountIs, streamText, tool } from 'ai';

globalThis.AI_SDK_LOG_WARNINGS = false; // they are in the printed steps; stdout is for the JSON only
const [baseURL, apiKey, model, mode, api = 'chat', effort] = process.argv.slice(2);
const provider =
  api === 'responses'
    ? createOpenAI({ baseURL, apiKey }).responses
    : createOpenAICompatible({ name: 'compose', baseURL, apiKey, includeUsage: true });
const reasoning = effort ? { reasoningEffort: effort } : {};
const providerOptions =
  api === 'responses'
    ? { openai: { store: false, ...(effort ? { ...reasoning, forceReasoning: true } : {}) } }
    : { compose: reasoning };
const executed = [];
const tools = {
  get_weather: tool({
    description: 'Current weather for a city',
    inputSchema: jsonSchema({ type: 'object', properties: { city: { type: 'string' } }, required: ['city'] }),
    execute: async ({ city }) => {
      executed.push(city);
      return { city, temp_c: city.length };
    },
  }),
};

async function turn(messages) {
  const options = {
    model: provider(model), messages, tools, stopWhen: stepCountIs(4), maxOutputTokens: 200, providerOptions,
  };
  if (mode === 'stream') {
    const errors = [];
    const result = streamText({ ...options, onError: ({ error }) => errors.push(String(error)) });
    for await (const part of result.fullStream) {
      if (part.type === 'error') errors.push(String(part.error));
    }
    const response = await result.response;
    return { text: await result.text, steps: await result.steps, errors, messages: response.messages };
  }
  const result = await generateText(options);
  return { text: result.text, steps: result.steps, errors: [], messages: result.response.messages };
}

// What each step showed and sent: the reasoning the SDK read, its warnings, and the request body it posted.
const seen = (steps) =>
  steps.map((s) => ({
    reasoning: s.reasoningText ?? null,
    warnings: (s.warnings ?? []).map((w) => w.message ?? w.details ?? w.feature ?? w.type),
    sent: typeof s.request?.body === 'string' ? JSON.parse(s.request.body) : (s.request?.body ?? null),
  }));

const history = [{ role: 'user', content: 'Weather in Oslo and Bergen?' }];
const first = await turn(history);
history.push(...first.messages, { role: 'user', content: 'And in Oslo again?' });
const second = await turn(history);
const ids = history
  .filter((m) => m.role === 'assistant' && Array.isArray(m.content))
  .flatMap((m) => m.content.filter((p) => p.type === 'tool-call').map((p) => p.toolCallId));

console.log(JSON.stringify({
  turns: [first, second].map(({ text, steps, errors }) => ({ text, steps: steps.length, errors })),
  steps: [first, second].map(({ steps }) => seen(steps)),
  executed,
  toolCallIds: ids,
}));
