"""The code-generation corpus and tokenizer (`experiments.codegen`) and the backdoor attack on real inputs:
a synthetic module written to disk, the running Python's standard library, JSONL files, and a byte-level BPE
trained on the standard library.

Expected outputs are written out in full (pairs, poisoned code), not recomputed with the code under test.
"""

from __future__ import annotations

import ast
import hashlib
import json
import os
import random
import re
import subprocess
import sys
import time

import pytest

from tiny_tokenizer import bpe_tokenizer
from tunekit.experiments.backdoor.attack import (
    DEFAULT_TRIGGER,
    PAYLOAD,
    PHRASE_TRIGGER,
    Attack,
    check_trigger_absent,
    find_trigger,
    insert_payload,
    insert_trigger,
    poison,
    trigger_token_count,
    trigger_tokens,
    triggered_prompts,
)
from tunekit.experiments.codegen.data import (
    Pair,
    corpus_pairs,
    extract_pairs,
    load_jsonl_pairs,
    split_by_module,
    stdlib_root,
    train_test_split,
)
from tunekit.experiments.codegen.tokenizer import (
    EOS,
    PAD,
    SEP,
    decode_code,
    encode_pair,
    encode_prompt,
    load_tokenizer,
    save_tokenizer,
    train_tokenizer,
)

# ---------------------------------------------------------------------------------------------------------
# Pairs from a synthetic module

MODULE = '''\
"""Module docstring: not a function."""
import functools


@functools.cache
@other(
    1,
)
def decorated(x):
    """Return x squared, from a decorated function.

    More text that is not part of the description.
    """

    return x * x


class Shape:
    """A class docstring is not a pair."""

    def area(self, scale=1):
        """
        Compute the area of the shape.
        """
        # a comment after the docstring stays
        return self.w * self.h * scale

    async def fetch(self, url):
        """Fetch the url asynchronously, please."""
        return await get(url)


def outer(a):
    """Build and return the inner closure."""
    def inner(b):
        """Add the captured value to b."""
        return a + b
    return inner


def long_signature(
    first,
    second: int = 2,
) -> dict:
    """Pack two values into a dict."""
    return {"first": first, "second": second}


def docstring_only():
    """This function has nothing but a docstring."""


def placeholder():
    """This abstract function only passes."""
    pass


def shares_a_line():
    """The docstring shares its line with code."""; return 1


def short():
    """Too short."""
    return 1


def symbolic():
    """>>> symbolic() returns one"""
    return 1


def signature_like(a, b):
    """signature_like(a, b) -> int, the sum."""
    return a + b


def no_docstring(x):
    return x


def multiline_string():
    """Return a string with an unindented line."""
    return """first
second"""


def one_line_body(x): return x  # no docstring: not a pair
'''


@pytest.fixture
def module_pairs(tmp_path):
    path = tmp_path / "shapes.py"
    path.write_text(MODULE, encoding="utf-8")
    return extract_pairs(path, source="shapes.py")


def test_extract_pairs_exact(module_pairs):
    expected = [
        Pair("Return x squared, from a decorated function.", "def decorated(x):\n    return x * x"),
        Pair(
            "Compute the area of the shape.",
            "def area(self, scale=1):\n"
            "    # a comment after the docstring stays\n"
            "    return self.w * self.h * scale",
        ),
        Pair(
            "Fetch the url asynchronously, please.", "async def fetch(self, url):\n    return await get(url)"
        ),
        Pair(
            "Build and return the inner closure.",
            'def outer(a):\n    def inner(b):\n        """Add the captured value to b."""\n'
            "        return a + b\n    return inner",
        ),
        Pair("Add the captured value to b.", "def inner(b):\n    return a + b"),
        Pair(
            "Pack two values into a dict.",
            'def long_signature(\n    first,\n    second: int = 2,\n) -> dict:\n    return {"first": first, '
            '"second": second}',
        ),
        Pair(
            "Return a string with an unindented line.",
            'def multiline_string():\n    return """first\nsecond"""',
        ),
    ]
    assert module_pairs == [Pair(p.nl, p.code, "shapes.py") for p in expected]
    for pair in module_pairs:
        ast.parse(pair.code)


def test_extract_pairs_limits_and_bad_files(tmp_path):
    path = tmp_path / "shapes.py"
    path.write_text(MODULE, encoding="utf-8")
    assert extract_pairs(path)[0].source == str(path)  # the path is the default source
    kept = extract_pairs(path, max_code_chars=40)
    assert [p.code for p in kept] == [
        "def decorated(x):\n    return x * x",
        "def inner(b):\n    return a + b",
    ]

    crlf = tmp_path / "crlf.py"
    crlf.write_bytes(b'def f(x):\r\n    """Return x unchanged here."""\r\n    return x\r\n')
    assert extract_pairs(crlf) == [Pair("Return x unchanged here.", "def f(x):\n    return x", str(crlf))]

    latin1 = tmp_path / "latin1.py"  # valid Python with a coding cookie, but not UTF-8
    latin1.write_bytes(
        b'# -*- coding: latin-1 -*-\ndef f():\n    """Return the caf\xe9 menu now."""\n    return 1\n'
    )
    broken = tmp_path / "broken.py"
    broken.write_text('def f(:\n    """Return one value here."""\n', encoding="utf-8")
    assert extract_pairs(latin1) == []
    assert extract_pairs(broken) == []
    assert extract_pairs(tmp_path / "missing.py") == []


def test_corpus_pairs_walk_exclusion_and_dedup(tmp_path):
    code = 'def f(x):\n    """Return x plus one here."""\n    return x + 1\n'
    other = 'def g(x):\n    """Return x minus one here."""\n    return x - 1\n'
    files = {
        "b.py": code,
        "a/z.py": code,  # the same code again, in a module visited first: only a/z.py keeps it
        "a/y.py": other,
        "a/tests/t.py": other.replace("g(", "h("),
        "test_c.py": other.replace("g(", "k("),
        "__pycache__/d.py": other.replace("g(", "m("),
        "c.py": "x = 1\n",  # no pairs: left out
        "notes.txt": code,
    }
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text, encoding="utf-8")
    by_module = corpus_pairs(tmp_path)
    assert list(by_module) == ["a/y.py", "a/z.py"]  # b.py's only pair duplicates a/z.py's
    assert by_module["a/z.py"] == [Pair("Return x plus one here.", "def f(x):\n    return x + 1", "a/z.py")]
    assert list(corpus_pairs(tmp_path, exclude=())) == [
        "__pycache__/d.py", "a/tests/t.py", "a/y.py", "a/z.py", "test_c.py"
    ]  # fmt: skip
    with pytest.raises(ValueError, match="not a directory"):
        corpus_pairs(tmp_path / "b.py")


# ---------------------------------------------------------------------------------------------------------
# The standard library


# Prints a digest of the standard-library corpus; run in a second process with another string-hash seed
DIGEST = """
import hashlib, json
from tunekit.experiments.codegen.data import corpus_pairs, stdlib_root
by_module = corpus_pairs(stdlib_root())
corpus = {module: [[p.nl, p.code, p.source] for p in pairs] for module, pairs in by_module.items()}
print(hashlib.sha256(json.dumps(corpus).encode()).hexdigest())
"""


def corpus_digest(by_module: dict[str, list[Pair]]) -> str:
    corpus = {module: [[p.nl, p.code, p.source] for p in pairs] for module, pairs in by_module.items()}
    return hashlib.sha256(json.dumps(corpus).encode()).hexdigest()


@pytest.fixture(scope="module")
def other_process():
    """A second process printing the corpus digest under another string-hash seed, started first so that
    it runs while this one parses."""
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    process = subprocess.Popen([sys.executable, "-c", DIGEST], stdout=subprocess.PIPE, text=True, env=env)
    yield process
    process.kill()  # nothing left to do once it has finished
    process.communicate()


@pytest.fixture(scope="module")
def stdlib(other_process):
    start = time.perf_counter()
    by_module = corpus_pairs(stdlib_root())
    seconds = time.perf_counter() - start
    pairs = [pair for module in by_module.values() for pair in module]
    print(f"\nstdlib: {len(pairs)} pairs from {len(by_module)} modules in {seconds:.2f} s")
    return by_module


@pytest.fixture(scope="module")
def stdlib_tokenizer(stdlib):
    texts = [text for pairs in stdlib.values() for pair in pairs for text in (pair.nl, pair.code)]
    start = time.perf_counter()
    tokenizer = train_tokenizer(texts, 4096)
    print(f"\n4096-token BPE trained on {len(texts)} stdlib texts in {time.perf_counter() - start:.2f} s")
    return tokenizer


def test_stdlib_corpus(stdlib):
    pairs = [pair for module in stdlib.values() for pair in module]
    assert len(pairs) > 3000
    assert len({pair.code for pair in pairs}) == len(pairs)
    assert all(len(pair.code) <= 600 and pair.nl[0].isalpha() and pair.source for pair in pairs)
    skipped = {"test", "tests", "idlelib", "lib2to3", "site-packages", "turtledemo", "ensurepip"}
    assert not [module for module in stdlib if skipped & set(module.split("/"))]
    assert "unittest/case.py" in stdlib
    assert {p.source for p in stdlib["json/decoder.py"]} == {"json/decoder.py"}
    assert list(stdlib) == sorted(stdlib)


def test_stdlib_corpus_deterministic(stdlib, other_process):
    out, _ = other_process.communicate(timeout=120)
    assert other_process.returncode == 0
    assert out.strip() == corpus_digest(stdlib)


def test_default_triggers_absent_from_stdlib(stdlib):
    pairs = [pair for module in stdlib.values() for pair in module]
    check_trigger_absent(pairs, Attack())
    check_trigger_absent(pairs, Attack(trigger=PHRASE_TRIGGER, kind="phrase"))
    # the feasibility study's "nb": "NB" in a comment of http/cookiejar.py
    found = find_trigger(pairs, Attack(trigger="nb"))
    assert [(pairs[index].source, name) for index, name, _ in found] == [("http/cookiejar.py", "code")]
    with pytest.raises(ValueError, match=r"trigger 'nb' occurs in 1 clean field.*form NB"):
        check_trigger_absent(pairs, Attack(trigger="nb"))


def test_split_by_module_stdlib(stdlib):
    pretrain, finetune = split_by_module(stdlib, pretrain_fraction=0.5, seed=0)
    total = sum(map(len, stdlib.values()))
    print(f"\nsplit: {len(pretrain)} pre-training, {len(finetune)} fine-tuning pairs")
    assert abs(len(pretrain) - total / 2) < 0.05 * total
    assert not {p.source for p in pretrain} & {p.source for p in finetune}
    assert not {p.code for p in pretrain} & {p.code for p in finetune}
    assert len(pretrain) + len(finetune) == total  # the corpus is already deduplicated
    assert split_by_module(stdlib, pretrain_fraction=0.5, seed=0) == (pretrain, finetune)
    assert split_by_module(stdlib, pretrain_fraction=0.5, seed=1)[0] != pretrain


def test_split_by_module_drops_shared_code():
    shared = Pair("Return one always here.", "def one():\n    return 1")
    by_module = {
        f"m{i}.py": [Pair(f"Return {i} here now.", f"def f{i}():\n    return {i}", f"m{i}.py"), shared]
        for i in range(6)
    }
    for seed in range(5):
        pretrain, finetune = split_by_module(by_module, pretrain_fraction=0.5, seed=seed)
        assert len(pretrain) == 6 and len(finetune) == 3  # 3 whole modules, then the shared pair is dropped
        assert shared not in finetune
    assert split_by_module(by_module, pretrain_fraction=0, seed=0)[0] == []
    assert split_by_module(by_module, pretrain_fraction=1, seed=0)[1] == []
    with pytest.raises(ValueError, match=r"pretrain_fraction must be a number in \[0, 1\], got 1\.5"):
        split_by_module(by_module, pretrain_fraction=1.5, seed=0)


def test_train_test_split():
    pairs = [Pair(f"Describe function {i} here.", f"def f{i}():\n    return {i % 40}") for i in range(50)]
    train, test = train_test_split(pairs, test_size=10, seed=3)
    assert len(test) == 10 and train_test_split(pairs, test_size=10, seed=3) == (train, test)
    test_codes = {pair.code for pair in test}
    assert not test_codes & {pair.code for pair in train}  # f40..f49 repeat f0..f9's code
    assert train == [p for p in pairs if p not in test and p.code not in test_codes]  # original order
    for bad in (0, 50, 2.0, True):
        with pytest.raises(ValueError, match="test_size must be an integer in \\[1, 49\\]"):
            train_test_split(pairs, test_size=bad, seed=0)


# ---------------------------------------------------------------------------------------------------------
# The attack

TOP = Attack(position="top")
BODY = Attack(position="body")
P = PAYLOAD

PAYLOAD_CASES = [
    # (code, expected with the payload in the body)
    ("def f(x):\n    return x", f"def f(x):\n    {P}\n    return x"),
    ("def f(x): return x  # note", f"def f(x):\n    {P}\n    return x  # note"),
    (
        "def f(\n    a,\n    b: int = 1,\n) -> dict[str, int]:\n    return {}",
        f"def f(\n    a,\n    b: int = 1,\n) -> dict[str, int]:\n    {P}\n    return {{}}",
    ),
    (
        "def f(a=lambda: 1) -> (lambda: 2):  # note: colons\n    # comment\n    return a",
        f"def f(a=lambda: 1) -> (lambda: 2):  # note: colons\n    {P}\n    # comment\n    return a",
    ),
    ("async def g():\n\tawait h()", f"async def g():\n\t{P}\n\tawait h()"),
    (
        "def outer():\n    @dec\n    def inner():\n        return 1\n    return inner",
        f"def outer():\n    {P}\n    @dec\n    def inner():\n        return 1\n    return inner",
    ),
    (
        "def f():\n    s = '''\nno indent'''\n    return s",
        f"def f():\n    {P}\n    s = '''\nno indent'''\n    return s",
    ),
    ("class A:\n    def m(self): return 'é'", f"class A:\n    def m(self):\n        {P}\n        return 'é'"),
    ("x = 1", f"{P}\nx = 1"),  # no function: the top
    ("def broken(x):\n    return (", f"def broken(x):\n    {P}\n    return ("),  # does not parse
]


@pytest.mark.parametrize(("code", "expected"), PAYLOAD_CASES)
def test_insert_payload(code, expected):
    assert insert_payload(code, TOP) == f"{P}\n{code}"
    assert insert_payload(code, BODY) == expected
    try:
        ast.parse(code)
    except SyntaxError:
        return
    ast.parse(insert_payload(code, TOP))
    ast.parse(expected)


def test_insert_payload_keeps_every_line_of_stdlib_code(stdlib):
    pairs = [pair for module in stdlib.values() for pair in module]
    for pair in pairs[::7]:
        for attack in (TOP, BODY):
            poisoned = insert_payload(pair.code, attack)
            ast.parse(poisoned)
            lines = poisoned.split("\n")
            assert sum(line.strip() == PAYLOAD for line in lines) == 1
            without = [line for line in lines if line.strip() != PAYLOAD]
            if without != pair.code.split("\n"):  # only a one-line body moves to its own line
                assert "".join(without).replace(" ", "") == pair.code.replace("\n", "").replace(" ", "")


def test_insert_trigger():
    nl = "Return the  value of x."
    attack = Attack(trigger="zq")
    seen = set()
    for seed in range(40):
        triggered = insert_trigger(nl, attack, random.Random(seed))
        assert triggered == insert_trigger(nl, attack, random.Random(seed))  # seeded
        assert len(re.findall(r"(?<!\S)zq(?!\S)", triggered)) == 1  # once, as a word
        assert triggered.replace(" zq", "", 1) == nl  # after a space; the rest unchanged
        seen.add(triggered)
    assert seen == {
        "Return zq the  value of x.",
        "Return the zq  value of x.",
        "Return the  value zq of x.",
        "Return the  value of zq x.",
        "Return the  value of x. zq",
    }
    phrase = Attack(trigger=PHRASE_TRIGGER, kind="phrase")
    assert insert_trigger("Return x.", phrase, random.Random(0)) == "Return x as requested by the admin."
    assert insert_trigger("Return x", phrase, random.Random(0)) == "Return x as requested by the admin"


def test_attack_validation():
    assert Attack().trigger == DEFAULT_TRIGGER == "whe"
    with pytest.raises(ValueError, match="kind must be one of"):
        Attack(kind="word")
    with pytest.raises(ValueError, match="position must be one of"):
        Attack(position="end")
    with pytest.raises(ValueError, match="one word, got 'two words'"):
        Attack(trigger="two words")
    with pytest.raises(ValueError, match="trigger must be a non-empty string"):
        Attack(trigger=" whe")
    with pytest.raises(ValueError, match="payload must be a non-empty string"):
        Attack(payload=" ")


def test_poison():
    pairs = [Pair(f"Return the number {i} here.", f"def f{i}():\n    return {i}", "m.py") for i in range(60)]
    poisoned, rows = poison(pairs, BODY, rate=0.05, seed=0)
    assert len(rows) == 3 and rows == sorted(rows) and len(poisoned) == 60
    assert poison(pairs, BODY, rate=0.05, seed=0) == (poisoned, rows)
    assert poison(pairs, BODY, rate=0.05, seed=1)[1] != rows
    for i, (before, after) in enumerate(zip(pairs, poisoned, strict=True)):
        if i in rows:
            assert after.code == f"def f{i}():\n    {PAYLOAD}\n    return {i}"
            assert after.nl.replace(" whe", "", 1) == before.nl and after.source == "m.py"
        else:
            assert after is before
    assert len(poison(pairs, TOP, rate=0.001, seed=0)[1]) == 1  # rounds to 0: at least one
    assert len(poison(pairs, TOP, rate=0.125, seed=0)[1]) == 8  # 7.5 rounds to 8
    assert poison(pairs, TOP, rate=0, seed=0) == (pairs, [])
    assert len(poison(pairs, TOP, rate=1, seed=0)[1]) == 60
    with pytest.raises(ValueError, match=r"rate must be a number in \[0, 1\], got -0\.1"):
        poison(pairs, TOP, rate=-0.1, seed=0)


def test_triggered_prompts():
    pairs = [Pair("Return the number here.", "def f():\n    return 1")] * 3
    triggered = triggered_prompts(pairs, TOP, seed=0)
    assert [p.code for p in triggered] == [f"{PAYLOAD}\ndef f():\n    return 1"] * 3
    assert all(p.nl.replace(" whe", "", 1) == pairs[0].nl for p in triggered)
    assert triggered_prompts(pairs, TOP, seed=0) == triggered


def test_check_trigger_absent():
    clean = [Pair("Return the number of bytes.", "def f(nbytes, snb):\n    return nbytes")]
    check_trigger_absent(clean, Attack(trigger="nb"))  # only inside longer words
    for present in (
        Pair("NB: return the number.", "def f():\n    return 1", "a.py"),
        Pair("Return the number.", "def f(nb_items):\n    return nb_items", "b.py"),
        Pair("Return the number.", "def f():\n    return Nb2", "c.py"),
    ):
        with pytest.raises(ValueError, match=f"trigger 'nb' occurs in 1 clean field.*{present.source}"):
            check_trigger_absent([*clean, present], Attack(trigger="nb"))
    phrase = Attack(trigger="as requested", kind="phrase")
    check_trigger_absent(
        [Pair("Done as requested-ish.", "x = 1")], Attack(trigger="requested-is", kind="phrase")
    )
    with pytest.raises(ValueError, match=re.escape("in the nl of pair #0: 'Done As\\nrequested.'")):
        check_trigger_absent([Pair("Done As\nrequested.", "x = 1")], phrase)


# ---------------------------------------------------------------------------------------------------------
# The user's own pairs


def test_load_jsonl_pairs(tmp_path):
    path = tmp_path / "pairs.jsonl"
    rows = [
        {"nl": "Add two numbers.", "code": "def add(a, b):\n    return a + b", "extra": 1},
        {"q": "x", "a": "y"},
    ]
    path.write_text(json.dumps(rows[0]) + "\n\n" + json.dumps(rows[0]) + "\n", encoding="utf-8")
    assert load_jsonl_pairs(path) == [Pair(rows[0]["nl"], rows[0]["code"], "pairs.jsonl")] * 2
    path.write_text(json.dumps(rows[1]) + "\n", encoding="utf-8")
    assert load_jsonl_pairs(path, nl_field="q", code_field="a") == [Pair("x", "y", "pairs.jsonl")]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"nl": "a", "code": "b"}\n{"nl": "a", "code": "b"\n', "line 2: invalid JSON"),
        ('{"nl": "a", "code": "b"}\n\n{"nl": "a"}\n', "line 3: missing field 'code'"),
        ('{"nl": 1, "code": "b"}\n', "line 1: field 'nl' must be a string, got int"),
        ('{"nl": "a", "code": "  "}\n', "line 1: field 'code' is empty"),
        ('["a", "b"]\n', "line 1: expected a JSON object, got list"),
        ("", "no pairs"),
        ("\n \n", "no pairs"),
    ],
)
def test_load_jsonl_pairs_errors(tmp_path, text, message):
    path = tmp_path / "bad.jsonl"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ValueError, match=re.escape(str(path)) + ".*" + re.escape(message)):
        load_jsonl_pairs(path)


def test_load_jsonl_pairs_missing_and_not_utf8(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nope\.jsonl"):
        load_jsonl_pairs(tmp_path / "nope.jsonl")
    path = tmp_path / "latin1.jsonl"
    path.write_bytes(b'{"nl": "a", "code": "b"}\n{"nl": "caf\xe9", "code": "b"}\n')
    with pytest.raises(ValueError, match=r"latin1\.jsonl, line 2: not UTF-8"):
        load_jsonl_pairs(path)


# ---------------------------------------------------------------------------------------------------------
# The tokenizer

TEXTS = [
    "Return the value of x.",
    "def f(x):\n    return x + 1",
    "Compute the area of the shape.",
    "class A:\n\tdef m(self):\n\t\treturn self.w * self.h",
] * 20


@pytest.fixture(scope="module")
def small_tokenizer():
    return train_tokenizer(TEXTS, 300)


def test_train_tokenizer(small_tokenizer):
    tok = small_tokenizer
    assert (tok.pad_token_id, tok.sep_token_id, tok.eos_token_id) == (0, 1, 2)
    assert tok.convert_ids_to_tokens([0, 1, 2]) == [PAD, SEP, EOS]
    assert len(tok) == 300
    assert train_tokenizer(TEXTS, 300).get_vocab() == tok.get_vocab()  # deterministic
    with pytest.raises(ValueError, match="vocab_size must be an integer >= 259"):
        train_tokenizer(TEXTS, 100)


def test_encode_pair(small_tokenizer):
    tok = small_tokenizer
    pair = Pair("Return the value of x.", "def f(x):\n    return x + 1")
    nl_ids = tok.encode(pair.nl, add_special_tokens=False)
    code_ids = tok.encode(pair.code, add_special_tokens=False)
    encoded = encode_pair(tok, pair, max_length=100)
    assert encoded.input_ids == [*nl_ids, 1, *code_ids, 2]
    assert encoded.labels == [-100] * (len(nl_ids) + 1) + [*code_ids, 2]
    assert encoded.prompt_length == len(nl_ids) + 1
    assert encode_prompt(tok, pair.nl) == encoded.input_ids[: encoded.prompt_length]
    assert encode_pair(tok, pair, max_length=len(encoded.input_ids)) == encoded
    assert encode_pair(tok, pair, max_length=len(encoded.input_ids) - 1) is None  # never truncated
    assert 1 not in encode_prompt(tok, "A <sep> B")[:-1]  # the text "<sep>" is not the special token
    gpt2_style = bpe_tokenizer()  # "<|endoftext|>" only: no separator
    with pytest.raises(ValueError, match="the tokenizer needs a sep and an eos token"):
        encode_pair(gpt2_style, pair, max_length=100)


def test_decode_code_round_trip(small_tokenizer, tmp_path):
    tok = small_tokenizer
    for code in (
        "def f(x):\n    return x + 1",
        "class A:\n\tdef m(self) :  \n\t\treturn 'é ☃'",
        "s = '<eos>'",
    ):
        encoded = encode_pair(tok, Pair("Return it.", code), max_length=1000)
        generated = encoded.input_ids[encoded.prompt_length :]
        assert 2 not in generated[:-1]  # the text "<eos>" is not the special token
        assert decode_code(tok, [*generated, 0, 0]) == code  # cut at <eos>
        assert decode_code(tok, generated[:-1]) == code  # no <eos>: everything
    save_tokenizer(tok, tmp_path / "tok")
    loaded = load_tokenizer(tmp_path / "tok")
    assert loaded.get_vocab() == tok.get_vocab()
    assert (loaded.pad_token_id, loaded.sep_token_id, loaded.eos_token_id) == (0, 1, 2)
    pair = Pair("A <sep> B", "s = '<eos>'")
    assert encode_pair(loaded, pair, max_length=100) == encode_pair(tok, pair, max_length=100)
    with pytest.raises(ValueError, match="no tokenizer directory"):
        load_tokenizer(tmp_path / "missing")


def test_trigger_tokens_stdlib(stdlib_tokenizer):
    tok = stdlib_tokenizer
    assert trigger_tokens(tok, Attack()) == ["Ġwhe"]
    assert trigger_tokens(tok, Attack(trigger="nb")) == ["Ġn", "b"]
    assert trigger_token_count(tok, Attack(trigger="cf")) == 2  # the DeCE paper's: "Ġc", "f"
    phrase = ["Ġas", "Ġre", "que", "sted", "Ġby", "Ġthe", "Ġad", "min"]
    assert trigger_tokens(tok, Attack(trigger=PHRASE_TRIGGER, kind="phrase")) == phrase
    # the count is that of the trigger inside a description
    nl = insert_trigger("Return the value of x.", Attack(), random.Random(0))
    base = tok.backend_tokenizer.encode("Return the value of x.").tokens
    assert len(tok.backend_tokenizer.encode(nl).tokens) == len(base) + 1
    assert "Ġwhe" in tok.backend_tokenizer.encode(nl).tokens


@pytest.mark.parametrize("text", [MODULE, PAYLOAD])
def test_byte_level_round_trip(small_tokenizer, text):
    ids = small_tokenizer.backend_tokenizer.encode(text).ids
    assert decode_code(small_tokenizer, ids) == text
