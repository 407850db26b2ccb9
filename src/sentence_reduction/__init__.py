"""sentence-reduction: predict the months of a sentence reduction (减刑) from the ruling's text."""

__version__ = "0.1.0"
