"""The challenges' measures (:mod:`.metrics`), evaluation of folders, validation during training, figures."""
