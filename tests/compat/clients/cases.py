"""What the compatibility tests ask, in one place: the client scripts (run in their own envs, this folder on
their path) and the tests that check their answers against the suite's openai SDK (tests/compat/conftest.py,
`reference`) import it. Short outputs and tiny images keep the suite fast; greedy decoding (temperature 0) makes
every answer the engine's one answer, whichever client asked."""

from __future__ import annotations

CHAT_MODEL = "smollm2-135m-instruct"
EMBEDDINGS_MODEL = "all-minilm-l6-v2"  # MiniLM: 256 tokens of context, 384 dimensions
IMAGE_MODEL = "tiny-sd-random"  # random weights: noise-like pictures, but the same seed gives the same bytes

QUESTION = "What is the capital of France? Answer in one word."  # SmolLM2: "The capital of France is Paris."
OTHER_QUESTION = "Name a primary colour."
MAX_TOKENS = 12
COMPLETION_PROMPT = "The capital of France is"
COMPLETION_MAX_TOKENS = 8
SENTENCES = ["hello world", "The cat sat on the mat."]
CITY_QUESTION = "Name a big city in Japan."  # structured outputs: {"name": ..., "country": ...}
CITY_MAX_TOKENS = 60

IMAGE_PROMPT = "a red square"
EDIT_PROMPT = "a blue square"
IMAGE_SIZE = "64x64"
IMAGE_EXTRAS = {"seed": 7, "steps": 2}  # extensions (`extra_body` in the Python SDKs)

# Every call must reach the engine: the frontend's response cache would answer a repeated request from memory.
NO_STORE = {"Cache-Control": "no-store"}

# Retrieval (LlamaIndex): one paragraph per topic, and a long document of distractors that LlamaIndex's default
# 1024-token chunks would cut into pieces over MiniLM's 256 tokens.
TOPICS = [
    "Paris is the capital and the largest city of France. It lies on the Seine, in the north of the country.",
    "Photosynthesis lets plants turn sunlight, water and carbon dioxide into sugar and oxygen.",
    "Mount Everest, in the Himalayas, is the highest mountain on Earth above sea level.",
    "The Amazon is the largest tropical rainforest in the world and spans nine countries of South America.",
]
QUERIES = {  # query -> the index in TOPICS of the paragraph it must retrieve
    "Which city is the capital of France?": 0,
    "How do plants make their food from light?": 1,
    "What is the tallest mountain in the world?": 2,
}
LONG_DOCUMENT = " ".join(f"Entry {i} of the ledger records a delivery of {i * 7 % 13 + 2} crates of goods "
                         f"to warehouse {i % 5} on day {i % 28 + 1}." for i in range(150))
CHUNK_SIZE = 200  # LlamaIndex counts tiktoken (cl100k) tokens; MiniLM's WordPiece counts more, up to 256
