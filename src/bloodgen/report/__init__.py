"""Reports a person reads: a document model rendered to Markdown and to self-contained HTML, and plots."""
