// CORS as a browser page using the SDK would meet it: the SDK's own requests (recorded by a custom fetch, with
// the Origin a browser adds), then the preflight a browser would send before them, for exactly the headers the
// SDK sent. argv: origin, chat model, embeddings model.
import { args, baseURL, client, describeError, main } from './common.mjs';

const [origin, chatModel, embeddingsModel] = args;
// What a browser sends without a preflight (CORS-safelisted), and what it sets itself.
const SAFELISTED = new Set(['accept', 'accept-language', 'content-language', 'origin', 'content-length']);

await main(async () => {
  const sent = new Set();
  const answers = [];
  const browserish = async (url, init = {}) => {
    const headers = new Headers(init.headers);
    headers.set('origin', origin);
    for (const [name] of headers) sent.add(name);
    const response = await fetch(url, { ...init, headers });
    answers.push({
      url: String(url), status: response.status,
      allow_origin: response.headers.get('access-control-allow-origin'),
      expose: response.headers.get('access-control-expose-headers'),
    });
    return response;
  };
  const openai = client({ fetch: browserish, organization: 'org-test', project: 'proj-test' });

  await openai.models.list();
  const chat = { model: chatModel, temperature: 0, max_tokens: 4, messages: [{ role: 'user', content: 'Hi' }] };
  await openai.chat.completions.create(chat);
  const stream = await openai.chat.completions.create({ ...chat, stream: true });
  for await (const _ of stream);
  await openai.embeddings.create({ model: embeddingsModel, input: 'hello' });
  let missing;
  try {
    await openai.embeddings.create({ model: 'no-such-model', input: 'hello' });
  } catch (error) {
    missing = describeError(error);
  }

  const requested = [...sent].filter((name) => !SAFELISTED.has(name)).sort();
  const preflight = await fetch(`${baseURL}/chat/completions`, {
    method: 'OPTIONS',
    headers: { origin, 'access-control-request-method': 'POST', 'access-control-request-headers': requested.join(',') },
  });
  return {
    requested, answers, missing,
    preflight: {
      status: preflight.status,
      allow_origin: preflight.headers.get('access-control-allow-origin'),
      allow_methods: preflight.headers.get('access-control-allow-methods'),
      allow_headers: preflight.headers.get('access-control-allow-headers'),
      allow_credentials: preflight.headers.get('access-control-allow-credentials'),
    },
  };
});
