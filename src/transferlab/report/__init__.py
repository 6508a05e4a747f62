"""The report: corrected verdicts, tables, figures, the recommendation; metrics files in, Markdown and HTML out. No TensorFlow."""
