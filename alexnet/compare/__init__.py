"""``alexnet compare``: AlexNet against torchvision's families on one dataset (``runner``) and its report."""
