// A multi-turn tool loop run by the Vercel AI SDK itself (openai-compatible provider, as OpenCode uses
// it): the SDK executes the tool and sends the next turn, echoing each earlier tool call with only its
// `id`, `type` and `function`. Two user turns, so the second turn replays the first turn's calls.
// With API `responses` the SDK's own OpenAI provider drives /responses instead (stateless: store false,
// so earlier calls come back as function_call items with their call_id).
// Usage: node tool_loop.mjs BASE_URL KEY MODEL stream|generate [chat|responses]
import { createOpenAI } from '@ai-sdk/openai';
import { createOpenAICompatible } from '@ai-sdk/openai-compatible';
import { generateText, jsonSchema, stepCountIs, streamText, tool } from 'ai';

const [baseURL, apiKey, model, mode, api = 'chat'] = process.argv.slice(2);
const provider =
  api === 'responses'
    ? createOpenAI({ baseURL, apiKey }).responses
    : createOpenAICompatible({ name: 'compose', baseURL, apiKey, includeUsage: true });
const providerOptions = api === 'responses' ? { openai: { store: false } } : undefined;
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
    return { text: await result.text, steps: (await result.steps).length, errors, messages: response.messages };
  }
  const result = await generateText(options);
  return { text: result.text, steps: result.steps.length, errors: [], messages: result.response.messages };
}

const history = [{ role: 'user', content: 'Weather in Oslo and Bergen?' }];
const first = await turn(history);
history.push(...first.messages, { role: 'user', content: 'And in Oslo again?' });
const second = await turn(history);
const ids = history
  .filter((m) => m.role === 'assistant' && Array.isArray(m.content))
  .flatMap((m) => m.content.filter((p) => p.type === 'tool-call').map((p) => p.toolCallId));

console.log(JSON.stringify({
  turns: [first, second].map(({ text, steps, errors }) => ({ text, steps, errors })),
  executed,
  toolCallIds: ids,
}));
