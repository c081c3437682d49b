"""Held-out answers of an instruction-tuned model: its answers to the validation examples' prompts, scored.

A chat model can reach a fair validation loss and still answer every question with the same word (the HRAN
seed's "is is define is is") or with nothing at all: the loss alone does not show a collapse. So train.py
answers the first validation instructions at the end of an instruction-tuning run and writes distinct-2 and the
repetition rate of those answers into the model card, and `hatchlings probe hran collapse` scores its runs with
the same `answer_scores`.

Scores (words as in hatchlings.probes.text_quality, so byte-, word- and BPE-level models count alike):

- distinct-1 / distinct-2: distinct words / word pairs over all words / pairs of the answers;
- repetition: the share of each answer's word 3-grams that repeat an earlier one in the same answer;
- one-word answers: answers of 4+ words in which a single word makes up half or more of the words;
- blank answers: answers without a single word (only whitespace or punctuation), the same collapse when the
  one token is a newline.

The card scores greedy answers (the decoding most prone to loops, and deterministic) and sampled ones (as the
export's generation config samples), since a chat user meets the latter.
"""

from __future__ import annotations

from collections import Counter

ANSWER_TOKENS = 60  # tokens per answer
ANSWER_PROMPTS = 32  # validation instructions answered for the card (a large dataset's first ones)
ONE_WORD_MIN_WORDS, ONE_WORD_SHARE = 4, 0.5
CARD_SCORES = {"answers distinct-2": "distinct-2", "answers repetition (rep-3)": "repetition"}  # card row: score
CARD_DECODINGS = {"greedy": {}, "sampled": {"temperature": 0.8, "top_k": 50, "seed": 0}}


def one_word_answer(words: list[str]) -> bool:
    """An answer of 4+ words in which one word makes up half or more of them."""
    return len(words) >= ONE_WORD_MIN_WORDS and Counter(words).most_common(1)[0][1] >= ONE_WORD_SHARE * len(words)


def answer_scores(answers: list[str]) -> dict:
    """distinct-1/2, repetition, and the shares of one-word and blank answers (None: not measurable)."""
    from ..probes import text_quality as tq  # here: the probes package imports this module

    samples = [tq.words(a, drop_partial=False) for a in answers]
    return {"distinct-1": tq.distinct_n(samples, 1), "distinct-2": tq.distinct_n(samples, 2),
            "repetition": tq.repetition_rate(samples),
            "one-word answers": sum(map(one_word_answer, samples)) / max(1, len(samples)),
            "blank answers": sum(not words for words in samples) / max(1, len(samples))}


def instruction_prompts(rows, limit: int = ANSWER_PROMPTS) -> list[list[int]]:
    """The prompt ids of the first `limit` instruction rows: each row's tokens before its first scored label.

    An instruction row masks its prompt (-100 from the bos on); packed plain text scores every token and has
    no prompt, so it is skipped."""
    prompts = []
    for row in rows:
        if len(prompts) == limit:
            break
        labels = row["labels"]
        first = next((i for i, label in enumerate(labels) if label != -100), 0)
        if first > 0:
            prompts.append(list(row["input_ids"][:first]))
    return prompts


def generate_answers(model, tokenizer, prompts: list[list[int]], new_tokens: int = ANSWER_TOKENS, *,
                     temperature: float = 0.0, top_k: int = 0, seed: int | None = None) -> list[str]:
    """The model's answer (up to `new_tokens` tokens, special tokens removed) to each tokenized prompt:
    greedy by default, else sampled (`seed` set before each answer, so a set of answers is reproducible)."""
    from ..generation import generate_text

    was_training = model.training
    model.eval()
    try:
        return [generate_text(model, tokenizer, ids, max_new_tokens=new_tokens, temperature=temperature,
                              top_k=top_k, seed=seed) for ids in prompts]
    finally:
        model.train(was_training)


def card_answer_scores(model, tokenizer, rows) -> dict:
    """The card's entries for held-out answers: distinct-2 and the repetition rate, greedy (the decoding most
    prone to loops) and sampled as `hatchlings chat` and the export's generation config do by default
    (temperature 0.8, top-k 50; seed 0). Empty when the rows hold no instruction examples."""
    prompts = instruction_prompts(rows)
    if not prompts:
        return {}
    entries = {"held-out answers": f"up to {ANSWER_TOKENS} tokens to each of the first {len(prompts)} "
                                   "validation instructions"}
    for decoding, options in CARD_DECODINGS.items():
        scores = answer_scores(generate_answers(model, tokenizer, prompts, **options))
        entries |= {f"{name} ({decoding})": "n/a" if scores[key] is None else scores[key]  # None: too few words
                    for name, key in CARD_SCORES.items()}
    return entries


__all__ = ["ANSWER_TOKENS", "CARD_DECODINGS", "CARD_SCORES", "answer_scores", "card_answer_scores", "generate_answers",
           "instruction_prompts", "one_word_answer"]
