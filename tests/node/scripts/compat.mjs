// The openai Node SDK beyond the basics, for docs/compatibility.md (tests/compat/test_openai_node.py):
// responses.create and the responses.stream helper, images.generate, images.edit with toFile, and
// chat.completions.parse with zodResponseFormat. argv: one JSON object, the requests' values (clients/cases.py)
// and the PNG to edit (base64).
import { toFile } from 'openai';
import { zodResponseFormat } from 'openai/helpers/zod';
import { z } from 'zod';
import { args, client, main } from './common.mjs';

/** Run named cases (async functions returning JSON-able values), each on its own: one failing case is reported
 * as its stack (and the server's error body), and the others still run. Prints {name: {value}} or
 * {name: {error}} (tests/compat/envs.py `case_value` turns an error into the test's failure). */
async function runCases(cases) {
  await main(async () => {
    const results = {};
    for (const [name, run] of Object.entries(cases)) {
      try {
        results[name] = { value: await run() };
      } catch (error) {
        const body = error?.error ? `\nserver said: ${JSON.stringify(error.error)}` : '';
        results[name] = { error: `${error?.stack ?? error}${body}` };
      }
    }
    return results;
  });
}

const spec = JSON.parse(args[0]);
const openai = client({ defaultHeaders: spec.headers });
const ask = { model: spec.chat_model, input: spec.question, temperature: 0, max_output_tokens: spec.max_tokens };
const image = { model: spec.image_model, size: spec.size, response_format: 'b64_json', ...spec.image_extras };

await runCases({
  async responses_create() {
    const answer = await openai.responses.create(ask);
    return { status: answer.status, text: answer.output_text };
  },
  async responses_stream() {
    const stream = openai.responses.stream(ask);
    const kinds = [];
    let deltas = '';
    for await (const event of stream) {
      kinds.push(event.type);
      if (event.type === 'response.output_text.delta') deltas += event.delta;
    }
    const final = await stream.finalResponse();
    return { first: kinds[0], last: kinds.at(-1), deltas, text: final.output_text };
  },
  async images_generate() {
    const answer = await openai.images.generate({ ...image, prompt: spec.image_prompt });
    return { b64_json: answer.data[0].b64_json };
  },
  async images_edit() {
    const png = await toFile(Buffer.from(spec.png, 'base64'), 'in.png', { type: 'image/png' });
    const answer = await openai.images.edit({ ...image, prompt: spec.edit_prompt, image: png });
    return { b64_json: answer.data[0].b64_json };
  },
  async chat_parse_zod() {
    const City = z.object({ name: z.string(), country: z.string() });
    const answer = await openai.chat.completions.parse({
      model: spec.chat_model, temperature: 0, max_tokens: spec.city_max_tokens,
      messages: [{ role: 'user', content: spec.city_question }], response_format: zodResponseFormat(City, 'city'),
    });
    return { parsed: answer.choices[0].message.parsed, content: answer.choices[0].message.content };
  },
});
