// What every script shares (tests/node/sdk.py runs them): the SDK pointed at the test server, and the result
// protocol, JSON on the last line of stdout, or a non-zero exit with the stack (and the server's error body).
import OpenAI from 'openai';

export const baseURL = process.env.MODELGATE_BASE_URL;
export const args = process.argv.slice(2);

export function client(options = {}) {
  return new OpenAI({
    baseURL,
    apiKey: process.env.MODELGATE_API_KEY || 'unused',
    maxRetries: 0, // a retry would hide the first answer's error
    timeout: 120_000,
    ...options,
  });
}

export async function main(run) {
  try {
    process.stdout.write(`${JSON.stringify(await run())}\n`);
  } catch (error) {
    process.stderr.write(`${error?.stack ?? error}\n`);
    if (error?.error) process.stderr.write(`server said: ${JSON.stringify(error.error)}\n`);
    process.exitCode = 1;
  }
}

/** The fields of an SDK error a test checks: its class, status and OpenAI's envelope as the SDK parsed it. */
export function describeError(error) {
  return {
    name: error.constructor.name, status: error.status, code: error.code, type: error.type, param: error.param,
    message: error.message, requestID: error.requestID,
  };
}
