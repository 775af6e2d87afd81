"""Measuring and choosing: calibration of activation scales, SPLS accounting and esact-tune's search."""
