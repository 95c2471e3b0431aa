"""`invoke predict`: DensePose on image files and folders."""
from invoke import Exit, task

from dpdeploy.inference import predict as core
from dpdeploy.ui import render
from dpdeploy.inenv.outputs import DEFAULT_MAX_SIZE, DEFAULT_VIS, VISUALIZERS
from dpdeploy.records import predict_summary
from dpdeploy.records.run import RunRecord
from dpdeploy.cli import common


@task(positional=["inputs"], help={
    "inputs": "Image files and folders; several separated by commas (e.g. 'a.jpg,photos/'). Folders: "
              "their image files (top level).",
    "out": "Output folder (default: the run record's predict/).",
    "vis": f"Comma-separated overlays: {','.join(VISUALIZERS)} (default {','.join(DEFAULT_VIS)}).",
    "model": "Model from env/matrix.yml (default: the matrix's default model).",
    "min_score": "Minimum detection score (default 0.8, as DensePose's apply_net.py).",
    "device": "cpu or cuda (default: the plan's device).",
    "weights": "Checkpoint file, or 'synthetic' for a pipeline check without real weights "
               "(default: the cached file of `invoke weights`).",
    "config": "The model's config yaml (default: projects/DensePose/configs in the kept detectron2 source).",
    "prefix": "The DensePose env (default: the plan's prefix).",
    "max_size": f"Longest image side fed to the model; larger images are resized (default {DEFAULT_MAX_SIZE}).",
    "max_detections": f"Cap on persons per image (default: the config's; {core.SYNTHETIC_MAX_DETECTIONS} with "
                      "synthetic weights).",
    "json": "Print the summary as JSON on stdout (progress goes to stderr).",
    "batch_size": "Images per forward pass (default 0: from the device, 2 on a CPU, by free memory on a GPU).",
    "precision": "fp32, bf16 (CPUs with avx512_bf16 / amx, GPUs from compute capability 8.0) or fp16 (GPUs); "
                 "see docs/performance.md (default fp32).",
    "gpus": "GPU indices to run one worker each on, e.g. 0,1 (default with --device cuda: every GPU).",
    "every": "Videos: keep every Nth frame (default 1: all).",
    "engine": "local (the pipelined worker, default) or ray (Ray Data over a local or given Ray cluster; needs an "
              "env with Ray: invoke setup --profile cpu-ray, or cu130-ray on GPUs). See docs/scale.md.",
    "address": "With --engine ray: the cluster to join, auto or HOST:PORT (default: start a local Ray on 127.0.0.1 "
               "and stop it afterwards).",
    "workers": "Worker processes on a CPU (default: one per core, as inputs and memory allow); with --engine "
               "ray, DensePose actors (default: one per GPU, else one per CPU).",
})
def predict(c, inputs: str, out: str = "", vis: str = ",".join(DEFAULT_VIS), model: str = "",
            min_score: str = "0.8", device: str = "", weights: str = "", config: str = "", prefix: str = "",
            max_size: int = DEFAULT_MAX_SIZE, max_detections: int = 0, json: bool = False, batch_size: int = 0,
            precision: str = "fp32", gpus: str = "", every: int = 1, engine: str = "local", address: str = "",
            workers: int = 0) -> None:
    """Run DensePose on images and videos: overlays, side-by-side, IUV arrays and JSON per image."""
    from dpdeploy.ui.progress import PredictView  # rich, only when predicting

    with common.user_errors(json):
        s = common.settings(c, prefix=prefix)
        env_prefix, default_device, host_gpus = common.predict_target(s, prefix, device)
        matrix = common.load_matrix(s)
        records: list[RunRecord] = []

        def new_record():   # made only once every check has passed: a refusal writes nothing
            records.append(RunRecord.create(s.home_path, "predict"))
            return records[0].folder

        req, skipped = core.prepare(
            [inputs], home=s.home_path, prefix=env_prefix, default_device=default_device,
            models=core.model_specs(matrix), model=model or matrix.default_model, out=out, vis=vis, weights=weights,
            min_score=core.parse_score(min_score), device=device, config=config, max_size=max_size,
            max_detections=max_detections, record_folder=new_record, gpus=host_gpus, precision=precision,
            batch_size=batch_size, every=every, gpu_list=gpus, engine=engine, address=address, workers=workers)
    record = records[0]
    core.write_command(record.folder, core.typed_command(), req)
    summary = core.start_summary(req, skipped, run=str(record.folder), command=" ".join(core.typed_command()))
    log = record.log_path("worker")
    elsewhere = req.out != str(record.folder / "predict")   # --out: the run record keeps a copy of the summary
    if elsewhere:
        predict_summary.write(record.folder, summary)
    stopped = f"the worker was ended; the images it finished are in {req.out} (summary.json lists them)"
    with common.interruptible(stopped), PredictView(record.folder / "terminal.log", to_stderr=json) as view:
        view.header(req, skipped)
        core.run(req, summary, log, on_event=view.event)
        view.footer(summary, record.folder, core.log_tail(log))
    if elsewhere:
        predict_summary.write(record.folder, summary)
    if json:
        print(render.to_json(summary))
    if not summary.success:
        raise Exit(code=1)
