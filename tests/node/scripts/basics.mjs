// models.list, chat.completions.create (plain and streamed) and embeddings.create, as an app would call them.
// argv: chat model, embeddings model.
import { args, client, describeError, main } from './common.mjs';

const [chatModel, embeddingsModel] = args;

await main(async () => {
  const openai = client();
  const models = [];
  for await (const model of openai.models.list()) models.push(model);

  const request = {
    model: chatModel, temperature: 0, max_tokens: 12, seed: 7,
    messages: [{ role: 'user', content: 'Name the capital of France in one word.' }],
  };
  const { data: plain, response } = await openai.chat.completions.create(request).withResponse();

  const stream = await openai.chat.completions.create({ ...request, stream: true, stream_options: { include_usage: true } });
  const chunks = [];
  for await (const chunk of stream) chunks.push(chunk);

  const input = ['hello world', 'The cat sat on the mat.'];
  const embedded = await openai.embeddings.create({ model: embeddingsModel, input }); // base64, decoded by the SDK
  const asFloats = await openai.embeddings.create({ model: embeddingsModel, input, encoding_format: 'float' });

  let missing;
  try {
    await openai.chat.completions.create({ ...request, model: 'no-such-model' });
  } catch (error) {
    missing = describeError(error);
  }

  return {
    models: models.map(({ id, object, task, max_model_len }) => ({ id, object, task, max_model_len })),
    plain: {
      id: plain.id, object: plain.object, model: plain.model, choices: plain.choices, usage: plain.usage,
      request_id: plain._request_id, header_request_id: response.headers.get('x-request-id'),
    },
    stream: {
      objects: [...new Set(chunks.map((c) => c.object))],
      ids: [...new Set(chunks.map((c) => c.id))],
      first_delta: chunks[0]?.choices[0]?.delta,
      text: chunks.flatMap((c) => c.choices).map((c) => c.delta?.content ?? '').join(''),
      finish_reasons: chunks.flatMap((c) => c.choices).map((c) => c.finish_reason).filter(Boolean),
      usage: chunks.at(-1)?.usage,
      chunk_count: chunks.length,
    },
    embeddings: {
      object: embedded.object, model: embedded.model, usage: embedded.usage,
      data: embedded.data.map((d) => ({ index: d.index, object: d.object, embedding: d.embedding })),
      float_data: asFloats.data.map((d) => d.embedding),
    },
    missing,
  };
});
