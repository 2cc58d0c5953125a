"""Numbers in the log: small statistics keep their digits."""
from utils.logger import format_recalls, format_stat


def test_format_stat_keeps_tiny_values_visible():
    assert format_stat(0.12345) == '0.1235'
    assert format_stat(0.0) == '0.0000'
    assert format_stat(3.2e-9) == '3.20e-09'
    assert format_stat(-4e-5) == '-4.00e-05'
    assert format_stat(float('nan')) == 'nan'


def test_format_recalls():
    assert format_recalls({'R@1': 0.5, 'MAP@R': 0.25}) == 'R@1 0.5000  MAP@R 0.2500'
