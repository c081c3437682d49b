"""Model cards must parse back as valid Hub metadata and state the model's true size."""

import numpy as np
import pytest
from huggingface_hub import ModelCard
from transformers import GPT2Config, GPT2LMHeadModel

from hatchlings.model_cards import build_model_card, plot_loss_curve
from hatchlings.model_cards.card import _compact_count

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
REPO = "someone/bdh-tiny"


@pytest.fixture(scope="module")
def model():
    config = GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=50, n_positions=32,
                        bos_token_id=0, eos_token_id=0)
    return GPT2LMHeadModel(config)


def make_card(model, **overrides):
    kwargs = dict(
        model=model,
        repo_name=REPO,
        architecture="bdh",
        summary="A tiny Baby Dragon Hatchling test model.",
        train_info={"data_files": ["train.txt"], "tokens": 12345, "steps": 10,
                    "wall_time_s": 3.25, "hardware": "CPU", "command": "hatchlings train | tee log"},
        eval_results={"eval_loss": 2.5, "perplexity": 12.182, "bits_per_byte": 1.75,
                      "dataset": "tiny-corpus"},
        widget_prompts=["Once upon a time", "The dragon"],
        datasets=["someone/tiny-corpus"],
        loss_curve="loss_curve.png",
    )
    kwargs.update(overrides)
    return build_model_card(**kwargs)


def metrics_of(data: dict) -> dict:
    (entry,) = data["model-index"]
    return {m["type"]: m["value"] for r in entry["results"] for m in r["metrics"]}


def test_metadata_round_trips_through_text(model):
    data = ModelCard(str(make_card(model))).data.to_dict()
    assert data["library_name"] == "transformers"
    assert data["pipeline_tag"] == "text-generation"
    assert data["license"] == "apache-2.0"
    assert {"hatchlings", "bdh", "custom_code"} <= set(data["tags"])
    assert data["datasets"] == ["someone/tiny-corpus"]
    assert data["widget"] == [{"text": "Once upon a time"}, {"text": "The dragon"}]
    assert data["model-index"][0]["name"] == REPO
    result = data["model-index"][0]["results"][0]
    assert result["task"]["type"] == "text-generation"
    assert result["dataset"] == {"name": "tiny-corpus", "type": "tiny-corpus"}
    assert metrics_of(data) == {"loss": 2.5, "perplexity": 12.182, "bits_per_byte": 1.75}


def test_saved_card_loads_from_disk(model, tmp_path):
    path = tmp_path / "README.md"
    make_card(model).save(path)
    loaded = ModelCard.load(path)
    assert loaded.data.library_name == "transformers"
    assert metrics_of(loaded.data.to_dict())["loss"] == 2.5
    assert "## How to use" in loaded.text


def test_states_true_parameter_count(model):
    text = make_card(model).text
    n = model.num_parameters()
    assert f"{n:,} parameters" in text
    assert f"({_compact_count(n)})" in text
    assert "gpt2" in text  # model.config.model_type
    assert "n_embd: 16" in text  # config values


def test_only_measured_metrics_are_indexed(model):
    data = make_card(model, eval_results={"eval_loss": 3.0}).data.to_dict()
    assert metrics_of(data) == {"loss": 3.0}
    assert data["model-index"][0]["results"][0]["dataset"]["name"] == "custom text"
    assert "model-index" not in make_card(model, eval_results={}).data.to_dict()


def test_numpy_and_nonfinite_metrics_still_parse(model):
    # huggingface_hub dumps with yaml.dump: a raw numpy scalar would become a python tag.
    evals = {"eval_loss": np.float32(2.5), "perplexity": float("inf")}
    data = ModelCard(str(make_card(model, eval_results=evals))).data.to_dict()
    assert metrics_of(data) == {"loss": 2.5}


def test_body_sections_and_usage_snippet(model):
    text = make_card(model).text
    headings = ("## Model details", "## Training", "## Evaluation", "## How to use", "## Intended use",
                "## Limitations")
    positions = [text.index(heading) for heading in headings]
    assert positions == sorted(positions)  # in this order: intended use just before limitations
    assert f'AutoModelForCausalLM.from_pretrained("{REPO}", trust_remote_code=True)' in text
    assert f'AutoTokenizer.from_pretrained("{REPO}", trust_remote_code=True)' in text  # no y/N prompt
    assert 'pipeline("text-generation"' in text
    assert "![Training and validation loss](loss_curve.png)" in text
    assert "| tokens | 12,345 |" in text
    assert "hatchlings train \\| tee log" in text  # pipe escaped so the table row survives
    assert "loss_curve" not in make_card(model, loss_curve=None).text


def test_compact_count_units():
    assert _compact_count(999) == "999"
    assert _compact_count(4_624) == "4.62K"
    assert _compact_count(1_234_567) == "1.23M"
    assert _compact_count(999_999) == "1M"
    assert _compact_count(2_500_000_000) == "2.5B"


def test_plot_loss_curve_writes_png(tmp_path):
    history = [
        {"step": 10, "loss": 3.2}, {"step": 20, "loss": 2.9},
        {"step": 20, "eval_loss": 3.0}, {"step": 30, "loss": 2.7},
        {"step": 30, "eval_loss": 2.8}, {"step": 30, "train_loss": 2.9, "train_runtime": 1.0},
    ]
    path = tmp_path / "plots" / "loss_curve.png"
    assert plot_loss_curve(history, path) is True
    data = path.read_bytes()
    assert data.startswith(PNG_MAGIC) and len(data) > 1000


@pytest.mark.parametrize("history", [[], [{"step": 5, "train_loss": 1.0, "train_runtime": 2.0}]])
def test_plot_loss_curve_without_points(tmp_path, history):
    path = tmp_path / "loss_curve.png"
    assert plot_loss_curve(history, path) is False
    assert not path.exists()


def test_periodic_and_final_validation_are_separate_labelled_series():
    """Periodic validation (a capped subset) and the final one (every block) never share a line."""
    from hatchlings.model_cards.card import FINAL_EVAL_PREFIX, loss_curve_lines

    history = [{"step": 10, "loss": 2.4}, {"step": 10, "eval_loss": 2.0}, {"step": 20, "loss": 1.9},
               {"step": 20, "eval_loss": 1.7}, {"step": 20, f"{FINAL_EVAL_PREFIX}_loss": 1.5}]
    lines = loss_curve_lines(history, validation_data="first 40 of 123 validation blocks",
                             final_data="all 123 validation blocks of 256 tokens")
    assert [(points, style["label"]) for points, style in lines] == [
        (([10.0, 20.0], [2.4, 1.9]), "train loss"),
        (([10.0, 20.0], [2.0, 1.7]), "validation loss (first 40 of 123 validation blocks)"),
        (([20.0], [1.5]), "final validation loss (all 123 validation blocks of 256 tokens)"),
    ]
    assert lines[2][1]["linestyle"] == "none"  # a point, not a line joined to the periodic series
    assert [style["label"] for _, style in loss_curve_lines(history[:2])] == ["train loss", "validation loss"]


def test_card_says_what_each_validation_figure_was_measured_on(model):
    from hatchlings.model_cards.card import CURVE_EVALUATED_ON, EVALUATED_ON

    evals = {"dataset": "tiny-corpus", EVALUATED_ON: "all 123 validation blocks of 256 tokens",
             CURVE_EVALUATED_ON: "first 40 of 123 validation blocks", "eval_loss": 1.443, "perplexity": 4.23}
    card = make_card(model, eval_results=evals)
    assert "| evaluated on | all 123 validation blocks of 256 tokens |" in card.text
    assert "| validation during training | first 40 of 123 validation blocks |" in card.text
    (entry,) = ModelCard(str(card)).data.to_dict()["model-index"]
    names = {m["type"]: m["name"] for r in entry["results"] for m in r["metrics"]}
    assert names == {"loss": "loss (all 123 validation blocks of 256 tokens)",
                     "perplexity": "perplexity (all 123 validation blocks of 256 tokens)"}
    assert metrics_of(ModelCard(str(card)).data.to_dict()) == {"loss": 1.443, "perplexity": 4.23}


def test_intended_use_says_what_it_is_for_and_not_for(model):
    text = make_card(model).text
    section = text[text.index("## Intended use"):text.index("## Limitations")]
    assert "research" in section and "brain-inspired language models" in section
    assert "`bdh` architecture" in section  # the architecture id is filled in
    assert "**not** meant for" in section
    for misuse in ("production", "decisions about people", "safety-critical"):
        assert misuse in section
    assert "{{" not in text and "}}" not in text  # no unrendered template variables anywhere


@pytest.mark.parametrize("datasets", [None, []])
def test_no_datasets_leaves_the_key_out(model, datasets):
    card = make_card(model, datasets=datasets)
    assert "datasets" not in ModelCard(str(card)).data.to_dict()
    assert "datasets:" not in str(card).split("---")[1]  # not even as an empty/null YAML key


def test_training_run_labels_the_capped_periodic_and_the_whole_final_validation(tmp_path, real_text):
    """The real command: periodic validation on the first blocks, the card's figures on all of them."""
    from transformers import TrainerCallback

    from test_training import TINY_PRESET, write_preset
    from hatchlings.training import run_training

    class Evaluations(TrainerCallback):
        def __init__(self):
            self.seen: list[dict] = []

        def on_evaluate(self, args, state, control, metrics=None, **kwargs):
            self.seen.append(dict(metrics))

    text = tmp_path / "text.txt"
    text.write_text(real_text)  # 20,000 bytes + eos = 312 blocks of 64: 281 train, 31 validation
    preset = {**TINY_PRESET, "data": {**TINY_PRESET["data"], "max_eval_blocks": 4},
              "training": {**TINY_PRESET["training"], "max_steps": 4, "eval_steps": 2, "logging_steps": 2}}
    out = tmp_path / "export"
    metrics = run_training(["--config", str(write_preset(tmp_path / "p.yaml", preset)), "--train_file", str(text),
                            "--output_dir", str(out)], callbacks=[evaluations := Evaluations()])
    periodic, final = evaluations.seen[:-1], evaluations.seen[-1]
    assert len(periodic) == 2 and all("eval_loss" in m for m in periodic)  # steps 2 and 4
    assert metrics["eval_loss"] == final["final_eval_loss"] != periodic[-1]["eval_loss"]  # same weights, other data
    card = ModelCard.load(out / "README.md")
    assert "| evaluated on | all 31 validation blocks of 64 tokens |" in card.text
    assert "| validation during training | first 4 of 31 validation blocks |" in card.text
    (entry,) = card.data.to_dict()["model-index"]
    loss = next(m for r in entry["results"] for m in r["metrics"] if m["type"] == "loss")
    assert loss == {"type": "loss", "value": pytest.approx(metrics["eval_loss"]),
                    "name": "loss (all 31 validation blocks of 64 tokens)"}
