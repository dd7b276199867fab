"""DVC stage `search@<backbone>-<method>`: the protocol's search on train-fullsup for that pair
(pipeline/train/tune.py), ``method_settings.<method>.search.trials`` Ray Tune trials, its best settings
written as searches/<dataset>/<backbone>-<method>.json for that method's training; no trials, no
search (the run trains with params.yaml's values)."""

from pipeline.dag.stage_runner import run
from pipeline.formats.search_result import SearchResult, write_search


def search(config, layout, args):
    trials = getattr(config.method_settings, args.method).search.trials
    result = SearchResult(config.dataset, args.backbone, args.method, 0)
    if trials:
        from pipeline.train.tune import search as run_search  # Ray and PyTorch: only where a search runs

        best = run_search(config, layout, args.backbone, args.method, trials, "search")
        result = SearchResult(config.dataset, args.backbone, args.method, best.trials, best.values, best.score,
                              best.mlflow_run_id)
    write_search(layout.search(config.dataset, args.backbone, args.method), result)


if __name__ == "__main__":
    run("search", search, ("backbone", "method"))
