"""What onebyte is measured against: the first public implementation's JSON over HTTP
(``json_http``), data-parallel first-order training's gloo all-reduce (``gloo``) and one
MeZO-style float SPSA (``mezo``)."""
