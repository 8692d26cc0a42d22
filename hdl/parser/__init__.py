"""The HTTP/1.1 header parser: :class:`~.header_parser.HeaderParser`, its descriptor layouts and ``parser.rdl``.
"""
