"""bench/llm.py helpers: the served copy pins threads, prompts are fresh and as long as asked."""

from __future__ import annotations

from tokenizers import Tokenizer

from bench.llm import Prompts, _percentile, served_repository
from export_scripts.common import parameters, read_config, write_config
from tests.integration import llm_tiny


def test_served_repository_pins_threads_and_links_files(tmp_path):
    source = tmp_path / "repo"
    write_config(source / "m", {"name": "m", "backend": "python", "parameters": parameters(intra_op_thread_count=8,
                                                                                         openai_task="chat")})
    (source / "m" / "1").mkdir()
    (source / "m" / "1" / "weights.bin").write_bytes(b"w")
    served = served_repository(source, "m", 3, tmp_path / "served")
    config = read_config(served / "m" / "config.pbtxt")
    assert config.parameters["intra_op_thread_count"].string_value == "3"
    assert config.parameters["openai_task"].string_value == "chat"
    assert (served / "m" / "1" / "weights.bin").read_bytes() == b"w"
    assert read_config(source / "m" / "config.pbtxt").parameters["intra_op_thread_count"].string_value == "8"


def test_prompts_are_fresh_and_long_enough():
    tokenizer = Tokenizer.from_file(str(llm_tiny.tokenizer_dir() / "tokenizer.json"))
    prompts = Prompts(tokenizer)
    long = [prompts.long(200) for _ in range(3)]
    assert all(200 <= len(tokenizer.encode(p).ids) <= 203 for p in long)
    short = [prompts.short() for _ in range(3)]
    firsts = {p.split(".")[0] for p in long + short}
    assert len(firsts) == 6  # a new leading number each: no shared prefix to reuse


def test_percentile():
    assert _percentile([3.0, 1.0, 2.0], 0.5) == 2.0
    assert _percentile([float(i) for i in range(1, 21)], 0.95) == 19.0
