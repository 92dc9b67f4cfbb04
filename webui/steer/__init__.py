"""Control vectors: train one from contrast pairs, keep it in llama.cpp's GGUF
control-vector format, and add it to the model's hidden states per request.

- cvec_file: the file format (written and read here, the header read as hostile input);
- library: user_data/control-vectors/NAME.gguf, and a request's vectors resolved
  against the loaded model (one per-layer addition, `Steering`);
- hooks: the Transformers side, a per-row addition to each decoder layer's output;
- train: PCA of hidden-state differences over contrast pairs (the repeng method);
- service: training and the perplexity check on a thread that borrows the model.
"""
