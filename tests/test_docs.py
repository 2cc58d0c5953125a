"""The README and docs/*.md: every relative link resolves, to a file and to a #heading inside a
markdown file (GitHub's anchors), and the README stays short enough to read in ten minutes."""
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README_MAX_LINES = 400

FENCE = re.compile(r'^(```|~~~).*?^\1', re.M | re.S)
INLINE_CODE = re.compile(r'`[^`\n]*`')
LINK = re.compile(r'!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+"[^"]*")?\s*\)')
HEADING = re.compile(r'^#{1,6}\s+(.*?)\s*#*\s*$', re.M)
EXTERNAL = re.compile(r'^[a-z][a-z0-9+.-]*:', re.I)  # https:, mailto:, ...


def prose(text):
    """The text without fenced code blocks and inline code, where [x](y) is no link."""
    return INLINE_CODE.sub('', FENCE.sub('', text))


def anchor(heading):
    """GitHub's anchor of a heading: its visible text lowercased, punctuation dropped (letters,
    digits, '_', '-' and spaces kept), each space a '-'."""
    text = re.sub(r'!?\[([^\]]*)\]\([^)]*\)', r'\1', heading)  # a link keeps its text
    text = re.sub(r'[^\w\- ]', '', text.lower())
    return text.replace(' ', '-')


def anchors(path):
    """The anchors of a markdown file's headings; a repeated one gets -1, -2, ... as on GitHub."""
    seen = {}
    found = set()
    for heading in HEADING.findall(FENCE.sub('', path.read_text(encoding='utf-8'))):
        name = anchor(heading)
        count = seen.get(name, 0)
        seen[name] = count + 1
        found.add(name if count == 0 else f'{name}-{count}')
    return found


def broken_links(path):
    """The relative links of a markdown file that do not resolve, each with the reason."""
    broken = []
    for target in LINK.findall(prose(path.read_text(encoding='utf-8'))):
        if EXTERNAL.match(target):
            continue
        file_part, _, fragment = target.partition('#')
        linked = (path.parent / file_part).resolve() if file_part else path
        if not linked.exists():
            broken.append(f'{target}: no such file')
        elif fragment and linked.suffix == '.md' and fragment not in anchors(linked):
            broken.append(f'{target}: no heading with that anchor in {linked.name}')
    return broken


def documents():
    return [ROOT / 'README.md', *sorted((ROOT / 'docs').glob('*.md'))]


def test_every_relative_link_of_the_readme_and_docs_resolves():
    assert len(documents()) > 2
    problems = {str(path.relative_to(ROOT)): broken_links(path) for path in documents()}
    assert {name: links for name, links in problems.items() if links} == {}


def test_the_readme_is_at_most_400_lines():
    lines = (ROOT / 'README.md').read_text(encoding='utf-8').splitlines()
    assert len(lines) <= README_MAX_LINES


def test_anchors_follow_githubs_rules():
    assert anchor('Known limitations (open)') == 'known-limitations-open'
    assert anchor('Losses: MMSI for any pair or triplet loss') == \
        'losses-mmsi-for-any-pair-or-triplet-loss'
    assert anchor('Speed, several GPUs, reliability') == 'speed-several-gpus-reliability'
    assert anchor('The `--pretrained` flag and ViT_S16') == 'the---pretrained-flag-and-vit_s16'


def test_a_broken_file_link_and_a_missing_anchor_are_found(tmp_path):
    (tmp_path / 'other.md').write_text('# Other page\n\n## Its part (two)\n\n## Its part (two)\n')
    (tmp_path / 'figure.png').write_bytes(b'\x89PNG')
    page = tmp_path / 'page.md'
    page.write_text(
        '# Page\n\n'
        'Good: [other](other.md), [part](other.md#its-part-two), [again](other.md#its-part-two-1),\n'
        '![figure](figure.png), [here](#page), [web](https://example.org/x.md#nothing).\n'
        'Bad: [gone](missing.md), [anchor](other.md#no-such-part), [self](#nowhere).\n'
        '`[code](not-a-link.md)`\n'
        '```\n[in a block](not-a-link-either.md)\n```\n')
    assert broken_links(page) == ['missing.md: no such file',
                                  'other.md#no-such-part: no heading with that anchor in other.md',
                                  '#nowhere: no heading with that anchor in page.md']
