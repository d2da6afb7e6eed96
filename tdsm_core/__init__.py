"""TDSM workbook: zero-shot skeleton action recognition by triplet diffusion, as an importable package.

Modules, in reading order:
- the method: model (the denoiser), diffusion (the noise schedule), losses (the triplet diffusion
  objective), text (class prompt features), evaluate (scoring by denoising error, metrics), gzsl;
- data and runs: config, data, splits, demo, train, checkpoint, runs, lock, pipeline, protocols,
  experiments (seeds and ablations), distributed (torchrun/DDP);
- raw skeletons: skeletons (readers), ntu and ntu_convert (NTU RGB+D files, parallel conversion),
  skeleton_format, skeleton_store (arrays on disk), skeleton_layouts, preprocess, shiftgcn,
  encoder (Shift-GCN on seen classes, feature export), baseline, skeleton_zsl (the whole chain);
- the workbook: analysis, plots, workbook (papermill runner); flops (benchmarks); errors, errors_doc;
  cli (`python -m tdsm_core`).
"""
__version__ = "0.1.0"
