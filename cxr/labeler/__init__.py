"""CheXpert-style report labeler: report text → 14 observation labels (1 / 0 / -1 / blank).

``ReportLabeler().label(report)`` → ``ReportLabels``; ``label_reports(reports)`` → (N, 14) array.
"""
from cxr.labeler.labeler import Mention, ReportLabeler, ReportLabels, label_reports, split_sentences
from cxr.labeler.language import Unread
from cxr.labeler.stats import LabelRates, format_rates, label_rates

__all__ = ["LabelRates", "Mention", "ReportLabeler", "ReportLabels", "Unread", "format_rates", "label_rates",
           "label_reports", "split_sentences"]
