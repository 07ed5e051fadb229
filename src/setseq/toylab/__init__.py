"""Tools that drive the embedded default: pretraining the toy DiT, scoring it, rendering the example
concepts. They sit above the trainer, the sampler and the backbones; the model, the world and the
checker they use sit below, in `setseq.toy`."""
