"""TDSM workbook: zero-shot skeleton action recognition by triplet diffusion, as an importable package.

The method is the five files at the top; everything else is in a subpackage by concern. Imports
point downward only: the top imports nothing below it, and each subpackage imports the top and the
subpackages listed before it (the README's Layout section repeats this block; tests keep both true).

the method:   model.py (the denoiser), diffusion.py (the noise schedule), losses.py (the triplet
              diffusion objective), evaluate.py (scoring by denoising error, metrics), config.py
              (every setting and its default), with errors.py, io.py, inputs.py (error types,
              atomic files and devices, checked inputs)
data/         features.py (SA-DVAE feature files, prompts), splits.py, text.py (text encoders),
              demo.py (the synthetic demo data)
figures/      plots.py (every figure, drawn from data and results)
runs/         build.py (config -> denoiser, schedule, text, scorer), train.py, pipeline.py (train,
              evaluate, run folders), checkpoint.py, metrics_log.py, lock.py, distributed.py,
              protocols.py, gzsl.py, experiments.py (seeds, ablations), folds.py (class-fold
              validation), tune.py (Optuna searches), baseline.py (the projection baseline), flops.py
skeletons/    readers.py, ntu.py, ntu_convert.py, format.py, store.py, layouts.py, streams.py,
              preprocess.py, shiftgcn.py, encoder.py, chain.py (raw skeletons -> features -> zero-shot),
              fold_encoders.py (class-fold validation with one encoder per fold)
workbook/     notebooks.py (what the notebooks call), runner.py (papermill, headless), sweep.py
              (every split, one summary), analysis.py (the figures' numbers), skeleton_views.py
cli/          main.py (the commands; the top's __main__.py runs it), errors_doc.py (docs/errors.md)
"""
__version__ = "0.1.0"
