"""LICENSE, CITATION.cff and the README's BibTeX agree on the licence and on the paper."""
import re
from pathlib import Path

import yaml  # PyYAML: installed with timm (one of its requirements)

ROOT = Path(__file__).resolve().parents[1]
PAPER_DOI = '10.1109/TNNLS.2022.3202571'
AUTHORS = ['Jiang', 'Liu', 'Dai', 'Hu', 'Huang', 'Yao', 'Xie', 'Shao']


def test_licence_is_mit():
    assert (ROOT / 'LICENSE').read_text().startswith('MIT License\n')


def test_citation_cff_names_the_paper():
    cff = yaml.safe_load((ROOT / 'CITATION.cff').read_text())
    assert cff['cff-version'] == '1.2.0' and cff['license'] == 'MIT'
    assert cff['type'] == 'software' and cff['authors'] and cff['title']
    paper = cff['preferred-citation']
    assert paper['type'] == 'article' and paper['doi'] == PAPER_DOI
    assert [a['family-names'] for a in paper['authors']] == AUTHORS
    assert (paper['volume'], paper['issue'], paper['start'], paper['end'], paper['year']) == (
        35, 4, 5103, 5116, 2024)


def test_readme_bibtex_matches_the_citation_file():
    readme = (ROOT / 'README.md').read_text()
    bibtex = re.search(r'```bibtex\n(.*?)```', readme, re.S).group(1)
    cff = yaml.safe_load((ROOT / 'CITATION.cff').read_text())['preferred-citation']
    assert f'doi     = {{{PAPER_DOI}}}' in bibtex
    assert f'title   = {{{cff["title"]}}}' in bibtex
    authors = re.search(r'author\s*=\s*\{(.*?)\},', bibtex, re.S).group(1)
    assert [name.split(',')[0].strip() for name in authors.split(' and ')] == AUTHORS
    assert 'pages   = {5103--5116}' in bibtex and 'volume  = {35}' in bibtex
