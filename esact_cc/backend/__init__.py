"""From `esact` IR to the binary: SRAM allocation, dependency tokens, .esb emission."""
