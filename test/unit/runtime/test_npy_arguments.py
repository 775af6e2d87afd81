"""`<output>.npy` names shared by esact-cc and esact-run (--input: test_input_bindings.py)."""

from esact_cc.runtime.cli.npy_arguments import output_file_name


def test_output_file_names_are_safe() -> None:
    assert output_file_name("last_hidden_state") == "last_hidden_state.npy"
    assert output_file_name("../logits:0") == "_logits_0.npy"
