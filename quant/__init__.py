"""INT8 quantization: fake quant and QAT, integer-only reference, histograms/tmax, TAP tables, attention loss."""
