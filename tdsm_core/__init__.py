"""TDSM workbook: zero-shot skeleton action recognition by triplet diffusion, as an importable package.

Modules, in reading order (the README's Layout section repeats this block; a test keeps them equal):

the method:   model.py (the denoiser), diffusion.py (the noise schedule), losses.py (the triplet
              diffusion objective), evaluate.py (scoring by denoising error, metrics), build.py
              (config -> denoiser, schedule, scorer), config.py, gzsl.py
data, text:   data.py, splits.py, text.py, demo.py, folds.py (class-fold validation)
runs:         train.py, pipeline.py, checkpoint.py, runs.py, lock.py, distributed.py, protocols.py,
              experiments.py (seeds, ablations), tune.py (Optuna searches)
skeletons:    skeletons.py, ntu.py, ntu_convert.py, skeleton_format.py, skeleton_store.py,
              skeleton_layouts.py, skeleton_streams.py, preprocess.py, shiftgcn.py, encoder.py,
              baseline.py, skeleton_zsl.py (raw skeletons -> features -> zero-shot)
workbook:     analysis.py, plots.py, workbook.py (the notebooks' numbers, figures, headless runner)
plumbing:     io.py, inputs.py, errors.py, errors_doc.py, flops.py, cli.py, __main__.py
"""
__version__ = "0.1.0"
