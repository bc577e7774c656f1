"""Is an LLM's reasoning faithful to the clues of its clip? Pure functions, no torch, no I/O.

The dataset builder asks an instruct LLM to explain a person's emotion from the clues of a clip
(the facial action units, the tone words of :func:`~emotion_llama.perception.prosody.describe_tone`,
the transcript). Weak LLMs invent evidence: the tone clue says "low-pitched", the reasoning says
"high-pitched"; on a crying clip it says the person laughed; it names facial movements that were
not detected. :func:`check_reasoning` catches such texts by rules tied to the clue vocabulary,
and :func:`grounded_reasoning` writes an explanation from the clues alone that always passes it.

The check favours precision: it only flags what one of the rules below can tie to a word of the
text, so a faithful reasoning that restates the clues in ordinary words passes. The text is read
lower-cased; quoted speech is taken out before rules 1-4 (the person's own words are not claims
about them, see rule 5).

**Negation.** A mention is not a claim when a negation cue comes at most 6 words before it in the
same clause: ``no``, ``not``, ``never``, ``without``, ``nor``, ``neither``, ``none``, ``nothing``,
``absence``, ``absent``, ``lack``, ``lacks``, ``lacking``, ``cannot``, any ``...n't``, ``rather
than``, ``instead of``, ``free of`` ("she is not smiling", "without a hint of a smile", "the
absence of a smile", "she doesn't speak loudly"). ``not only``, ``no doubt``, ``no wonder``,
``not just`` are no negation ("not only smiling but laughing" claims both). Clauses end at
``. ; : ! ? …``, at ``but``, ``while``, ``whereas``, ``although``, ``though``, ``yet``,
``however``, and at a comma followed by a new subject or ``and``/``but``/``so``/``then``
(", she", ", her", ", and"), so "she is not sad, she smiles" still claims the smile, while
"no smile, frown or laughter" negates all three.

Rules (a text fails when any holds; each problem is one short sentence in
:attr:`Faithfulness.problems`):

1. **Invented facial movement.** The text names a facial action that the face clue
   (:attr:`Evidence.au_phrases`) does not support. Names are the 18 FACS phrases of
   :data:`~emotion_llama.perception.action_units.AU_NAMES` (each supported by itself), AU codes
   ("AU12"), and everyday words, each supported by any of the phrases given:

   ===============================================  =============================================
   everyday words                                   supported by
   ===============================================  =============================================
   smile, smiling, grin, beaming                    lip corner puller
   smirk                                            lip corner puller, dimpler
   frown, scowl, furrowed/knitted/lowered brows     brow lowerer, lip corner depressor
   corners of the mouth turned down, downturned     lip corner depressor
   pout                                             lip corner depressor, chin raiser
   raised/lifted/arched eyebrows, brows raised      inner brow raiser, outer brow raiser
   inner (outer) brows raised                       inner (outer) brow raiser
   wide eyes, wide-eyed, eyes widen                 upper lid raiser
   squint, narrowed eyes, eyes crinkle              lid tightener, cheek raiser
   cheeks rise/raised                               cheek raiser
   open mouth, mouth open, jaw drops, gaping,       jaw drop, lips part
   lips parted, parted lips, lips part
   wrinkled nose, nose wrinkles                     nose wrinkler
   sneer                                            nose wrinkler, upper lip raiser
   curled/raised upper lip                          upper lip raiser
   pursed/pressed/tight lips, tight-lipped          lip tightener
   bites her lip, lips rolled in                    lip suck
   stretched lips                                   lip stretcher
   grimace                                          lip stretcher, upper lip raiser, brow lowerer,
                                                    nose wrinkler, lid tightener
   eyes closed, closed eyes, shuts her eyes         eyes closed, blink
   blink, blinks, blinking                          frequent blinking, blink
   dimple                                           dimpler
   raised chin, chin raised/puckers                 chin raiser
   ===============================================  =============================================

   E.g. "she smiles" fails without "lip corner puller"; "her brows are furrowed" passes with
   "brow lowerer". The same words in the vision-language description
   (:attr:`Evidence.visual_objective`, when there is one) also support a claim ("a smiling
   woman" supports "she smiles"): it is a clue too. With :attr:`Evidence.has_face` false every
   facial claim the visual objective does not support fails ("mentions 'smiles' but no face was
   analysed"), and without a visual objective so does any mention of the face itself ("her
   face", "his eyes", "facial expression") unless its clause is negated or says it is missing
   ("her face is not visible", "the face clue is missing").
2. **Tone words not in the tone clue.** A word about the voice must agree with
   :attr:`Evidence.tone_words` in dimension and direction ("very loud" in the clue supports
   "loud"; "loud" supports "raised voice"):

   ===========  ===============================================================================
   dimension    words (claim -> clue word that supports it)
   ===========  ===============================================================================
   pitch        high-pitched, high pitch, higher pitch, shrill, squeaky -> high-pitched;
                low-pitched, low pitch, deep voice, deep-voiced -> low-pitched;
                "low voice", "low tone" -> low-pitched or soft
   loudness     loud, loudly, louder, booming, raises her voice, high volume -> loud;
                soft, softly, quiet, quietly, hushed, faint, whisper, murmur, mumble,
                soft-spoken, lowers her voice, low volume -> soft
   rate         fast, quick(ly), rapid(ly), hurried(ly), rushed, brisk(ly), fast-paced -> fast;
                slow, slowly, slower, unhurried, leisurely, drawn-out, drawling -> slow
   intonation   lively, animated(ly), expressive(ly), varied, melodic, sing-song -> lively;
                monotone, monotonous, flat, flatly, droning -> monotone
   quality      rough, raspy, gravelly, scratchy, croaky -> rough or hoarse; breathy, husky ->
                breathy or hoarse; hoarse -> hoarse; trembling/shaky/quavering voice, "her voice
                trembles/cracks" -> rough or hoarse
   ===========  ===============================================================================

   A clue word also supports itself literally. Only words that describe the voice count: whisper,
   murmur, mumble, monotone, hoarse, breathy, raspy, shrill, high-/low-pitched always do; the
   others only next to a voice word: followed by one ("a loud, fast voice", "in hushed tones",
   "rapid speech", "slowly says"; voice words: voice, tone, pitch, intonation, speech, delivery,
   cadence, register, timbre, volume, speaking, talking, the speech verbs, and pace, tempo,
   rhythm, manner, way, fashion only after a speech word or before "of (her) speech": "speaks at
   a slow pace", "the pace of her speech is slow"), or preceded by one with only
   intensifiers, linking verbs and other tone words between ("her voice is quite loud", "she
   speaks loudly and quickly", "she sounds hurried"). So "a slow smile", "a soft smile", "high
   hopes", "fast friends", "a quiet room", "she smiles and slowly nods" are not tone claims.
   "high", "low" and "deep" count only with voice, pitch, tone, register or volume ("her pitch is
   high", "a deep voice"); "trembling", "shaky" only with voice. Any tone claim fails when
   :attr:`Evidence.has_voice` is false ("says 'loud' but no voice was measured").
3. **Contradiction** (reported as "contradicts the clue: ...", and
   :attr:`Faithfulness.contradicts` is true): a tone claim whose opposite is in
   the clue (high vs low pitch, loud vs soft, fast vs slow, lively vs monotone), e.g. "says
   'high-pitched' but the tone clue is 'low-pitched'"; a smile when the face clue has "lip corner
   depressor" and no "lip corner puller"; shouting when the tone clue is soft.
4. **Invented behaviour.** Laughter (laugh, laughs, laughing, laughter, giggle, chuckle, cackle,
   guffaw) needs laughter in the subtitle ("haha", "hahaha", "hehe", "[laughter]", "(laughs)",
   "*chuckles*"); crying (cry, cries, crying, tears, tearful, teary, sob, weep, wept, whimper,
   watery eyes, tearing up) needs "[crying]", "(sobs)", "(sniffles)"-like tokens; shouting
   (shout, yell, scream, shriek, holler, bellow) needs "loud" or "very loud" in the tone clue
   (and a voice);
   sighing needs "[sighs]"-like tokens; trembling (tremble, shiver, quiver, shaky hands/lips)
   needs the visual objective. The visual objective mentioning the behaviour supports it too
   ("a man laughing"). Negated mentions ("she is not crying") do not count; "a far cry" is no
   crying.
5. **Misquoted speech.** A quoted span (straight or curly double quotes, or single quotes
   around 3+ words) must appear in the subtitle, compared lower-cased with punctuation and
   whitespace normalised; a sub-span is fine, and an ellipsis ("this is ... day") splits a quote
   into parts that must each appear. Quotes of the visual objective, of the label, or of clue
   words ("the tone clue says "low-pitched"") are no misquotes; a one- or two-word quote that is
   itself a face or tone claim is taken as scare quotes (its words are then judged by rules 1-3).
   Paraphrase ("she says that she is fine") is not judged.
6. **Visual scene.** Clothing, setting and other scene claims are not checked, with or without a
   visual objective: too open-ended to judge precisely.
7. **Empty text.** An empty or whitespace-only reasoning fails with "empty reasoning".
8. **A loop.** A sentence or list line of 3 words or more that comes 3 times or more (compared
   lower-cased, without list numbers and punctuation) fails with "repeats '...' N times": the
   degenerate lists weak LLMs write ("17. Lips stretched to the edge: Sad" seventeen times). Once
   or twice is fine ("She looks sad. ... She looks sad.").

:func:`grounded_reasoning` writes the clue sentences that apply, in this order, and leaves out the
ones whose evidence is absent (no face, no detected action: no face sentence; no voice or no tone
word: no tone sentence; no subtitle, no visual objective: none of theirs)::

    The face shows a lip corner puller and a cheek raiser.
    The voice is high-pitched, loud and fast, with lively intonation.
    The person says: "This is the best day of my whole life."
    The frame is described as: "a woman in a red coat".
    These clues point to happy.

With no label the last sentence is "The clues are not enough to name an emotion."; with a label
but no clue sentence it is "No clue was measured; the record's label is {label}.".
"""

from emotion_llama.annotate.faithfulness.check import check_reasoning, grounded_reasoning
from emotion_llama.annotate.faithfulness.evidence import Evidence, Faithfulness, evidence_from_record

__all__ = [
    "Evidence",
    "Faithfulness",
    "check_reasoning",
    "evidence_from_record",
    "grounded_reasoning",
]
