"""The endpoints, one router per group: :mod:`.health` (service), :mod:`.files` (uploads),
:mod:`.chat` (OpenAI's chat completions), :mod:`.analyze` (structured analysis, batch jobs) and
:mod:`.static` (the web page). Each route reads the request and answers through the one
:class:`~emotion_llama.serve.state.ServeState` of its app (:data:`.deps.State`)."""
