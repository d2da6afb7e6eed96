"""TDSM workbook: zero-shot skeleton action recognition by triplet diffusion, as an importable package.

Modules, in reading order: model (the denoiser), diffusion (the noise schedule), losses (the
triplet diffusion objective), text (class prompt features), data (features, splits, prompts),
train, evaluate, pipeline (the steps of a run), cli.
"""
__version__ = "0.1.0"
