"""The report document renders the same content to Markdown and to self-contained HTML."""

import base64

import numpy as np

from bloodgen.report.document import Document, Heading, Image, Paragraph, Table, write_report


def test_markdown_and_html_carry_the_same_content(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.imsave(tmp_path / "grid.png", np.random.default_rng(0).random((8, 8, 3)))
    doc = Document("Study").add(
        Heading("Results"), Paragraph("FID uses `pool3` features; **lower** is better."),
        Table(["model", "FID"], [["ddpm", "3.1 ± 0.2"], ["a|b", "<9>"]], caption="Main table"),
        Image("grid.png", "Samples"))
    md_path, html_path = write_report(doc, tmp_path)
    md, page = md_path.read_text(), html_path.read_text()
    assert "| ddpm | 3.1 ± 0.2 |" in md and "a\\|b" in md and "![Samples](grid.png)" in md
    assert "<code>pool3</code>" in page and "<strong>lower</strong>" in page
    assert "&lt;9&gt;" in page  # cell text is escaped, never interpreted as markup
    embedded = base64.b64encode((tmp_path / "grid.png").read_bytes()).decode()
    assert f"data:image/png;base64,{embedded}" in page and "src='grid.png'" not in page
