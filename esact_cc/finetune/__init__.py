"""SPLS-aware fine-tuning (`esact-finetune`, docs/design.md section 6.1): train a model's layer
weights with SPLS in the forward pass, by self-distillation from its dense self or with labels,
and write them back into the ONNX file. Needs torch (`pip install -e '.[finetune]'`); only
`torch_required` and the weight mapping import without it."""
