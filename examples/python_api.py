"""mtbert from Python, notebook style: train a preset with overrides, load the best model, predict.

    MTBERT_DATA=../shared/data/cs224n python examples/python_api.py            # about 2 minutes on a 2-core CPU
    python examples/python_api.py --max_steps 2 --output_dir /tmp/api-run      # a quick look

Each `# %%` cell runs as a notebook cell (VS Code, Jupyter's jupytext); `python examples/python_api.py` runs them all.
"""

# %% Settings: the preset `smoke` (sum of the three task losses, a few dozen steps), overridden by keywords.
import argparse
import json
from pathlib import Path

import mtbert

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--output_dir", default="runs/python-api")
parser.add_argument("--max_steps", type=int, default=24)
parser.add_argument("--method", default="pcgrad")
parser.add_argument("--model_name_or_path", default=None, help="another backbone (default: the bundled MiniLM)")
parser.add_argument("--max_length", type=int, default=64)
args = parser.parse_args()

overrides = {"output_dir": args.output_dir, "max_steps": args.max_steps, "method": args.method,
             "max_length": args.max_length}
if args.model_name_or_path:
    overrides["model_name_or_path"] = args.model_name_or_path

# %% A config is checked when it is built: a bad value is one sentence naming the key.
try:
    mtbert.TrainConfig(learning_rate=-1)
except mtbert.ConfigError as err:
    print("refused:", err)

# %% Train. The results are the dev metrics of the best model (also in OUTPUT_DIR/results.json).
results = mtbert.train("smoke", overwrite_output_dir=True, **overrides)
print(json.dumps({k: v for k, v in results.items() if k != "overall_ci95"}, indent=2))

# %% Load the best model (a folder, or a Hub id such as "user/repo") and predict from texts.
model = mtbert.MultiTaskModel.from_pretrained(Path(args.output_dir) / "best")
sentiment = model.predict("sst", ["A gripping, funny and moving film.", "Dull, slow and far too long."])
similarity = model.predict("sts", [("A man plays a guitar.", "Someone plays music."),
                                   ("A man plays a guitar.", "The stock market fell today.")])
paraphrase = model.predict("para", [("How do I learn Python?", "What is the best way to learn Python?")])
for found in (sentiment, similarity, paraphrase):
    print(found.task, found.labels, found.scores.round(3).tolist())

# %% Save what was predicted, beside the run.
(Path(args.output_dir) / "python_api_predictions.json").write_text(json.dumps(
    {found.task: {"labels": found.labels, "scores": found.scores.tolist()}
     for found in (sentiment, similarity, paraphrase)}, indent=2) + "\n")
