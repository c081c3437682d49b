"""The dummy fifth architecture: a 2-layer Llama-like causal LM that exists only in the test folder.

It proves that an architecture plugs into hatchlings through its record alone (tests/test_dummy.py registers
`record.RECORD`): nothing outside tests/ names it.
"""
