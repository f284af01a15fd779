"""Images in: finding them (``dataset``), decoding them the one way (``decode``), checking
them (``doctor``), splitting them (``prepare``) and feeding them in batches (``batches``)."""
