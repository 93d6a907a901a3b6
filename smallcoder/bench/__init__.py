"""Benchmarks behind `smallcoder bench`: this package next to transformers + torch.

`train` (step tokens/s, MFU, memory), `generate` (prompt/decode tokens/s,
bandwidth), `peak` (matmul FLOP/s and memory bandwidth measured on the spot),
`flops` (PaLM model FLOPs), `reference` (the transformers side), `report`.
"""
