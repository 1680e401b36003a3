"""Publishing: the Hub folder, the filled model card (whose usage snippet must work as written), and
from_pretrained round trips."""
import hashlib
import json
import re

import pytest
import torch

from conftest import ROOT, assert_user_error, load_script, run_script, tiny_model_config, tiny_sizes, tiny_train_config
from checkpoint import load_model, save_model_folder
from common import UserError
from model import GPT
from model_modern import ModernGPT, modern_config
from trainer import train


def tiny_modern_config():
    sizes = tiny_sizes()
    return modern_config(**sizes)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, shakespeare):
    folder = tmp_path_factory.mktemp("publish")
    data = folder / "small.txt"
    data.write_text(shakespeare[:30_000])
    train(tiny_modern_config(), tiny_train_config(folder / "run", data, max_steps=6, eval_interval=3), log=lambda *_: None)
    return folder / "run"


def test_from_pretrained_gives_identical_logits_and_keeps_tied_weights(tmp_path):
    torch.manual_seed(0)
    for cls, config in ((GPT, tiny_model_config()), (ModernGPT, tiny_modern_config())):
        model = cls(config).eval()
        model.tokenizer = None
        save_model_folder(tmp_path / cls.__name__, model, None, {})
        loaded = load_model(tmp_path / cls.__name__)[0] if cls is GPT else cls.from_pretrained(tmp_path / cls.__name__)
        assert loaded.lm_head.weight is loaded.tok_emb.weight
        x = torch.randint(0, config.vocab_size, (2, 12))
        assert torch.equal(model(x)[0], loaded(x)[0])


def test_from_pretrained_refuses_the_other_architecture(tmp_path):
    save_model_folder(tmp_path / "vanilla", GPT(tiny_model_config()), None, {})
    with pytest.raises(Exception, match="vanilla"):
        ModernGPT.from_pretrained(tmp_path / "vanilla")


def test_dry_run_builds_a_filled_card_whose_snippet_generates(tiny_run, tmp_path):
    out = tmp_path / "export"
    result = run_script(ROOT / "publish.py", "--checkpoint", tiny_run, "--repo-id", "someone/tiny", "--dry-run",
                        "--out", out, env={"HF_TOKEN": ""})
    assert result.returncode == 0, result.stderr
    assert "nothing uploaded" in result.stdout
    assert {p.name for p in out.iterdir()} == {"model.safetensors", "config.json", "generation_config.json", "tokenizer.json",
                                               "tokenizer_config.json", "tinyllm.json", "README.md", "loss.png",
                                               "results.json", ".tinyllm-export"}  # the mark is not uploaded
    card = (out / "README.md").read_text()
    assert not re.search(r"\{\{\w+\}\}", card), "unfilled placeholder"
    assert card.startswith("---\nlicense: mit\nlibrary_name: transformers\n") and "pipeline_tag: text-generation" in card
    record = json.loads((tiny_run / "best" / "config.json").read_text())
    assert f"| validation loss | {record['val_loss']:.4f} nats/token |" in card
    assert f"| validation bits per character | {record['val_bpc']:.3f} |" in card
    assert f"| checkpoint step | {record['step']} |" in card and f"| parameters | {record['params']:,} |" in card
    assert f"| trained on | {record['hardware']} ({record['device']}, {record['dtype']}) |" in card
    assert json.loads((out / "config.json").read_text())["model_type"] == "llama"  # transformers' config...
    assert json.loads((out / "tinyllm.json").read_text())["model"] == record["model"]  # ...and ours, apart
    assert "llama-cli -m model.gguf" in card and "python src/export.py someone/tiny --to gguf" in card
    assert f"Its vocabulary is the {record['model']['vocab_size']} characters of its training text" in card
    # both usage snippets exactly as the card shows them (transformers alone, then tinyllm), with the repo id
    # pointed at the built folder
    snippets = [s.replace("someone/tiny", str(out)) for s in re.findall(r"```python\n(.*?)```", card, re.S)]
    assert len(snippets) == 2 and "AutoModelForCausalLM" in snippets[0] and "trust_remote_code" not in snippets[0]
    for snippet in snippets:
        run = run_script("-c", snippet, cwd=ROOT)
        assert run.returncode == 0, run.stderr
    assert run.stdout.startswith("ROMEO:") and len(run.stdout) > 150


def test_the_card_of_a_run_resumed_on_another_machine_names_each_machine_and_its_steps():
    record = {"hardware": "GPU B", "step": 3000, "machines": [
        {"hardware": "GPU A", "device": "cuda", "dtype": "fp16", "compiled": False, "from_step": 0},
        {"hardware": "GPU B", "device": "cuda", "dtype": "bf16", "compiled": True, "from_step": 1000}]}
    publish = load_script(ROOT / "publish.py")
    assert publish.hardware_of(record) == "steps 0–1000: GPU A, fp16; steps 1000–3000: GPU B, bf16, compiled"
    assert publish.hardware_of({**record, "machines": record["machines"][1:]}) == "GPU B"


def test_the_card_of_a_model_of_another_text_says_which_and_its_snippets_still_run(tmp_path):
    """A model trained on the user's own text (Greek here, without 'ROMEO:') got a card that said Tiny Shakespeare,
    tagged the Hub's tiny-shakespeare dataset and prompted every snippet with "ROMEO:", which its tokenizer cannot
    encode. Now the card names the file, its size and sha256, tags no dataset, and every snippet prompts with the
    sample's prompt (a newline here) and runs as written, generate.py's command without a --prompt."""
    data = tmp_path / "greek.txt"
    data.write_text("ΑΝΤΙΓΟΝΗ:\nὦ κοινὸν αὐτάδελφον Ἰσμήνης κάρα,\n" * 300, encoding="utf-8")
    train(tiny_modern_config(), tiny_train_config(tmp_path / "run", data, max_steps=4), log=lambda *_: None)
    out = tmp_path / "export"
    result = run_script(ROOT / "publish.py", "--checkpoint", tmp_path / "run", "--repo-id", "someone/greek",
                        "--dry-run", "--out", out, env={"HF_TOKEN": ""})
    assert result.returncode == 0, result.stderr
    card = (out / "README.md").read_text()
    sha = hashlib.sha256(data.read_text(encoding="utf-8").encode()).hexdigest()
    assert f"Data: `greek.txt` ({len(data.read_text(encoding='utf-8')):,} characters, sha256 {sha[:12]}...)" in card
    assert "shakespeare" not in card.split("---")[1].lower() and "ROMEO" not in card and "plays" not in card
    snippets = [s.replace("someone/greek", str(out)) for s in re.findall(r"```python\n(.*?)```", card, re.S)]
    assert len(snippets) == 2 and all('"\\n"' in s for s in snippets)
    for snippet in snippets:
        run = run_script("-c", snippet, cwd=ROOT)
        assert run.returncode == 0, run.stderr
    command = re.search(r"`python src/generate.py --checkpoint someone/greek`", card)
    assert command and '-p "\\n"' in card  # llama-cli reads escapes in -p
    run = run_script(ROOT / "src" / "generate.py", "--checkpoint", out, "--tokens", "20", "--seed", "0")
    assert run.returncode == 0 and run.stdout.startswith("\n") and len(run.stdout) > 10, run.stderr


def test_a_card_says_tiny_shakespeare_by_the_texts_checksum_or_an_older_records_default_file(shakespeare):
    publish = load_script(ROOT / "publish.py")
    from data import describe_text
    assert publish.training_text({"data_text": describe_text(shakespeare)}) == ("Tiny Shakespeare", True)
    assert publish.training_text({"train_config": {"data": None}}) == ("Tiny Shakespeare", True)  # before data_text
    excerpt = describe_text(shakespeare[:1000])
    name, is_it = publish.training_text({"data_text": excerpt, "train_config": {"data": ".../small.txt"}})
    assert not is_it and name == f"`small.txt` (1,000 characters, sha256 {excerpt['sha256'][:12]}...)"


@pytest.mark.parametrize("damaged", ["garbage", {"sha256": 5, "chars": 1}, {"sha256": "ab"}])
def test_a_damaged_record_of_the_training_text_is_one_line(tiny_run, tmp_path, damaged):
    import shutil
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    config = json.loads((run / "best" / "config.json").read_text())
    (run / "best" / "config.json").write_text(json.dumps({**config, "data_text": damaged}))
    result = run_script(ROOT / "publish.py", "--checkpoint", run, "--repo-id", "someone/tiny", "--dry-run", "--out",
                        tmp_path / "export", env={"HF_TOKEN": ""})
    assert_user_error(result, "data_text must be an object")
    assert not (tmp_path / "export").exists()


def test_upload_without_login_says_how_to_log_in(tiny_run, tmp_path):
    result = run_script(ROOT / "publish.py", "--checkpoint", tiny_run, "--repo-id", "someone/tiny", "--out",
                        tmp_path / "export", env={"HF_TOKEN": "", "HF_HOME": str(tmp_path / "hf")})
    assert_user_error(result, "not logged in", "huggingface-cli login")


def test_publish_needs_a_repo_id(tiny_run):
    result = run_script(ROOT / "publish.py", "--checkpoint", tiny_run, "--dry-run", env={"HF_REPO_ID": ""})
    assert_user_error(result, "--repo-id")


def test_a_hub_repo_id_downloads_only_config_and_weights(tiny_run, tmp_path, monkeypatch):
    """`from_pretrained("user/repo")` (and generate.py --checkpoint user/repo) go through snapshot_download,
    asking for config.json, model.safetensors and tinyllm.json only: nothing executable is fetched."""
    import huggingface_hub
    calls = []

    def fake_snapshot_download(repo_id, allow_patterns=None, **kwargs):
        calls.append((repo_id, sorted(allow_patterns)))
        return str(tiny_run / "best")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot_download)
    model = ModernGPT.from_pretrained("someone/tiny")
    assert calls == [("someone/tiny", ["config.json", "model.safetensors", "tinyllm.json"])]
    assert model.tokenizer is not None and model.tokenizer.decode(model.tokenizer.encode("ROMEO:")) == "ROMEO:"


def test_a_missing_folder_that_reads_as_a_repo_id_names_both_readings(monkeypatch):
    """checkpoints/modrn (a typo) is also a valid repo id; offline, the error must say it is no local folder
    instead of only reporting a failed download."""
    import huggingface_hub

    def offline(repo_id, **kwargs):
        raise ConnectionError("Name or service not known")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", offline)
    with pytest.raises(UserError, match=r"^checkpoints/modrn is no local folder, and the Hugging Face Hub did not "
                                        r"give it \(ConnectionError: Name or service not known\); pass a run folder"):
        ModernGPT.from_pretrained("checkpoints/modrn")
