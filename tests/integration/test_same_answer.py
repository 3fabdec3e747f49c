"""Same answer every time (issue 13): a request's text does not depend on what ran before or beside it.

Through the frontend with the openai SDK, against the real tritonserver and the exported SmolLM2 q4 model,
with the response cache bypassed (`Cache-Control: no-store`), so every request reaches the engine:

- the same request twice in a row gets the same text, streamed or not, on an idle and on a busy server;
- a streamed answer's deltas join to exactly the non-streamed answer, in either order, idle and busy;
- 16 greedy requests at once, prompts of 20 to 270 tokens, each get their solo answer, both with the
  prefixes their solo runs cached and cold;
- a seeded sample (temperature 1) gets the same text alone and while 8 other requests run.

Zero tolerance: exact string equality; a failure lists every prompt that differed, with both texts.
"Cold" means a fresh `cache_salt` (the engine's prefix cache is partitioned by salt): the prompts' text stays
fixed from session to session, yet no earlier request has primed the prefix cache for them. "Busy" means
other requests (cold prefills of various lengths, then decodes) keep changing the engine's batch meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid

import pytest
from openai import AsyncOpenAI

pytestmark = pytest.mark.integration

MODEL = "smollm2-135m-instruct"
NO_CACHE = {"Cache-Control": "no-store"}  # every request here must reach the engine, not the response cache
MAX_TOKENS = 12

LIBRARIAN = (
    "You are the assistant of a small public library in a mountain town. You answer questions from "
    "visitors of every age, politely and briefly. The library opens at nine in the morning and closes at six "
    "in the evening, except on Sundays, when it is closed all day. Members may borrow up to five books for "
    "three weeks; a renewal adds two more weeks unless someone else has reserved the book. The children's "
    "corner has picture books, comics and a reading club every Wednesday afternoon. There is no fee for "
    "membership, but a lost book must be replaced or paid for."
)
CHEF = (
    "You are a patient cooking teacher. Your students are beginners who have never cooked a full meal. "
    "Explain each step in plain words, mention the tools they need, warn them about hot pans and sharp "
    "knives, and suggest a simple substitute when an ingredient is hard to find. Keep every answer short."
)
GUIDE = (
    "You are a tour guide in an old harbour city. The city was founded by fishermen more than eight "
    "hundred years ago, grew rich from the salt and wool trade, and was nearly destroyed by a great fire "
    "in the seventeenth century. Its cathedral, rebuilt after the fire, has a bell tower with two hundred "
    "and twelve steps and a view over the whole bay. The old market square still hosts a fish market "
    "every morning except Monday. Along the eastern quay stand the warehouses of the merchant guilds, now "
    "turned into museums, cafes and a maritime school. In summer, boats leave every hour for the "
    "lighthouse island, where seals rest on the rocks and a small chapel stands among the dunes. Visitors "
    "often ask about the local food: smoked herring, rye bread with butter, and a sweet cake made with "
    "cardamom are the best known. You speak warmly and you like to add one surprising detail to every "
    "answer, but you never invent facts that are not in this description. If you do not know something, "
    "say so and suggest where the visitor could ask."
)


def system(prompt: str, question: str) -> list[dict]:
    return [{"role": "system", "content": prompt}, {"role": "user", "content": question}]


def user(question: str) -> list[dict]:
    return [{"role": "user", "content": question}]


# Asked twice in a row (and streamed and not), short and long. Each answer passes a near-tie (the two best
# next tokens within 0.05 nats on the q4 export), where the least numerical drift changes the text.
QUESTIONS = [
    user("Say hello."),
    system("Be brief.", "Count to three."),
    system(LIBRARIAN, "Can I borrow six books?"),
    user("A train leaves the station at noon and travels at sixty kilometres per hour. A second train leaves "
         "the same station an hour later at ninety kilometres per hour on a parallel track. Explain how to "
         "find when the second train catches up."),
]

# 16 conversations of about 20 to 270 prompt tokens; several share a system prompt, so their prefixes overlap.
MIXED = [
    user("Name a fruit."),
    user("What is 2+2?"),
    user("Say hello."),
    user("What is the capital of Italy?"),
    system("Be brief.", "Count to three."),
    system("Answer in French.", "Name an animal."),
    user("What is water?"),
    user("Describe the sea in one sentence."),
    system(CHEF, "How do I boil an egg?"),
    system(CHEF, "What can I use instead of butter?"),
    system(LIBRARIAN, "Can I borrow six books?"),
    system(LIBRARIAN, "Is the library open on Sunday?"),
    system(GUIDE, "What should I eat here?"),
    system(GUIDE, "We arrived by ferry this morning with two children and a dog. The children love animals "
                  "and the dog loves the beach. We have one free afternoon before our train leaves at seven. "
                  "What should we do?"),
    user("My grandmother kept bees in a wooden hive behind her house. Every summer we helped her collect the "
         "honey, wearing old hats with nets. She said the bees knew her voice. Write the first line of a "
         "poem about her."),
    user("A train leaves the station at noon and travels at sixty kilometres per hour. A second train leaves "
         "the same station an hour later at ninety kilometres per hour on a parallel track. Explain how to "
         "find when the second train catches up."),
]

# Seeded temperature-1 samples (prompt, seed).
SEEDED = [(user("Tell me a story."), 1234), (user("Write a line about the moon."), 7),
          (system(CHEF, "Invent a new sandwich."), 42)]


def salt() -> dict:
    """A `cache_salt` no request has used: the engine's prefix cache has nothing for this request."""
    return {"cache_salt": f"issue13-{uuid.uuid4().hex}"}


def label(messages: list[dict]) -> str:
    """The prompt for a failure message: system prompts cut short, the question whole."""
    parts = [m["content"][:40] + "..." if m["role"] == "system" else m["content"] for m in messages]
    return " / ".join(f"{m['role']}: {part}" for m, part in zip(messages, parts))


def assert_same(pairs: list[tuple[list[dict], str, str]], first: str, second: str) -> None:
    """Every pair's texts equal; otherwise one message naming each differing prompt with both texts."""
    differing = [f"{label(messages)}\n    {first}: {a!r}\n    {second}: {b!r}"
                 for messages, a, b in pairs if a != b]
    assert not differing, f"{len(differing)} of {len(pairs)} differ:\n  " + "\n  ".join(differing)


@pytest.fixture
async def client(frontend):
    async with AsyncOpenAI(base_url=frontend.base_url, api_key="unused", max_retries=0, timeout=120,
                           default_headers=NO_CACHE) as client:
        yield client


async def ask(client: AsyncOpenAI, messages: list[dict], body: dict, *, stream: bool = False,
              max_tokens: int = MAX_TOKENS, on_first=None, **sampling) -> str:
    """The answer's text (greedy unless `sampling` says otherwise); streamed, the deltas joined. `on_first` is
    called once the first delta arrives (streamed only)."""
    sampling = {"temperature": 0, **sampling}
    if not stream:
        result = await client.chat.completions.create(model=MODEL, messages=messages, max_tokens=max_tokens,
                                                      extra_body=body, **sampling)
        return result.choices[0].message.content
    parts = []
    chunks = await client.chat.completions.create(model=MODEL, messages=messages, max_tokens=max_tokens,
                                                  extra_body=body, stream=True, **sampling)
    async for chunk in chunks:
        parts.extend(choice.delta.content or "" for choice in chunk.choices)
        if on_first is not None:
            on_first()
            on_first = None
    return "".join(parts)


@contextlib.asynccontextmanager
async def server_state(client: AsyncOpenAI, state: str, workers: int = 4):
    """What else the server does during the block. `idle`: nothing. `busy`: `workers` streams of other
    requests (cold, of every length in MIXED) run back to back until the block ends, so the engine's batch
    keeps changing around the measured requests; the block starts once each worker's first request is in the
    batch (its first token has arrived)."""
    if state == "idle":
        yield
        return
    stop, started = asyncio.Event(), asyncio.Semaphore(0)

    async def worker(index: int) -> None:
        signalled = False

        def signal() -> None:
            nonlocal signalled
            if not signalled:
                signalled = True
                started.release()

        try:
            while not stop.is_set():
                await ask(client, MIXED[-1 - index % len(MIXED)], salt(), stream=True, on_first=signal)
                index += workers
        finally:
            signal()  # one that failed before its first token must not hold the block back (gather raises)

    tasks = [asyncio.create_task(worker(i)) for i in range(workers)]
    try:
        for _ in range(workers):
            await started.acquire()
        yield
    finally:
        stop.set()
        await asyncio.gather(*tasks)


async def twice(client: AsyncOpenAI, orders: list[tuple[bool, bool]],
                state: str) -> list[tuple[list[dict], str, str]]:
    """Each question cold, then at once again (its prompt now in the prefix cache); the questions take the
    `orders` (is the first streamed, is the second) in turn."""
    pairs = []
    async with server_state(client, state):
        for i, messages in enumerate(QUESTIONS):
            first_streamed, second_streamed = orders[i % len(orders)]
            body = salt()
            first = await ask(client, messages, body, stream=first_streamed)
            pairs.append((messages, first, await ask(client, messages, body, stream=second_streamed)))
    return pairs


@pytest.mark.parametrize("state", ["idle", "busy"])
async def test_same_request_twice_in_a_row_gets_the_same_text(client, state):
    """Plain then plain, streamed then streamed."""
    assert_same(await twice(client, [(False, False), (True, True)], state), "first", "again")


@pytest.mark.parametrize("state", ["idle", "busy"])
async def test_streamed_deltas_join_to_the_plain_answer(client, state):
    """Plain then streamed, streamed then plain."""
    pairs = await twice(client, [(False, True), (True, False)], state)
    pairs = [(m, a, b) if i % 2 == 0 else (m, b, a) for i, (m, a, b) in enumerate(pairs)]  # plain text first
    assert_same(pairs, "plain", "streamed")


async def test_sixteen_concurrent_greedy_requests_get_their_solo_answers(client):
    """Each of 16 mixed-length prompts alone and cold; then all 16 at once with the prefixes the solo runs
    cached; then all 16 at once again, cold (one new salt for all, so overlapping prompts may share)."""
    bodies = [salt() for _ in MIXED]
    solo = [await ask(client, messages, body) for messages, body in zip(MIXED, bodies)]
    cached = await asyncio.gather(*(ask(client, messages, body, stream=i % 2 == 1)
                                    for i, (messages, body) in enumerate(zip(MIXED, bodies))))
    shared = salt()
    cold = await asyncio.gather(*(ask(client, messages, shared, stream=i % 2 == 0)
                                  for i, messages in enumerate(MIXED)))
    assert_same([(m, a, b) for m, a, b in zip(MIXED, solo, cached)] +
                [(m, a, b) for m, a, b in zip(MIXED, solo, cold)], "solo", "concurrent")


async def test_seeded_sample_is_the_same_alone_and_among_other_requests(client):
    """Seeded temperature-1 samples, each alone and cold; then all of them at once while 8 greedy requests
    run, once with their prefixes cached and once cold: the same texts."""
    bodies = [{**salt(), "ignore_eos": True} for _ in SEEDED]
    alone = [await ask(client, m, body, temperature=1.0, seed=seed)
             for (m, seed), body in zip(SEEDED, bodies)]
    pairs = []
    for round_bodies in (bodies, [{**salt(), "ignore_eos": True} for _ in SEEDED]):
        others = [ask(client, messages, salt(), max_tokens=2 * MAX_TOKENS, stream=i % 2 == 1)
                  for i, messages in enumerate(MIXED[:8])]
        seeded = [ask(client, m, body, temperature=1.0, seed=seed)
                  for (m, seed), body in zip(SEEDED, round_bodies)]
        together = (await asyncio.gather(*seeded, *others))[:len(SEEDED)]
        pairs += [(m, a, b) for (m, _), a, b in zip(SEEDED, alone, together)]
    assert_same(pairs, "alone", "among others")
