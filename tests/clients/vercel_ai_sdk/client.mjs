// Drives the gateway with the Vercel AI SDK exactly as OpenCode does (openai-compatible provider,
// usage on), and prints what the SDK understood as JSON. The SDK throws on a first tool-call fragment
// without `id` and `function.name`, so a streamed tool call that arrives here is well-formed.
import { createOpenAICompatible } from '@ai-sdk/openai-compatible';
import { generateText, jsonSchema, streamText, tool } from 'ai';

const [baseURL, apiKey, model] = process.argv.slice(2);
const provider = createOpenAICompatible({ name: 'compose', baseURL, apiKey, includeUsage: true });
const tools = {
  get_weather: tool({
    description: 'Current weather for a city',
    inputSchema: jsonSchema({ type: 'object', properties: { city: { type: 'string' } }, required: ['city'] }),
  }),
};

const plain = await generateText({ model: provider(model), prompt: 'Say hello.', maxOutputTokens: 200 });

const stream = streamText({ model: provider(model), prompt: 'Weather in Oslo?', tools, maxOutputTokens: 200 });
const errors = [];
for await (const part of stream.fullStream) {
  if (part.type === 'error') errors.push(String(part.error));
}
const calls = (await stream.toolCalls).map((c) => ({ id: c.toolCallId, name: c.toolName, input: c.input }));

console.log(JSON.stringify({
  plain: { text: plain.text, finishReason: plain.finishReason, totalTokens: plain.usage.totalTokens },
  streamed: { text: await stream.text, calls, finishReason: await stream.finishReason,
              totalTokens: (await stream.usage).totalTokens, errors },
}));
