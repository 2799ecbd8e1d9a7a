"""General text the gate measures perplexity on, to notice an adapter that makes the model forget language.

Everyday prose in several languages, unrelated to any company: a domain adapter should leave it about as
predictable as before.
"""

GENERAL_TEXT = [
    "The weather was mild for the season, so many people walked to work and stopped for coffee on the way.",
    "Please remember to close the windows before you leave the house, because rain is expected this evening.",
    "The museum opens at ten in the morning and closes at six, except on public holidays.",
    "She read the letter twice, folded it carefully and put it back into the envelope.",
    "A good night's sleep, regular exercise and a balanced diet help most people feel better.",
    "The train to the airport leaves every fifteen minutes from the second platform.",
    "Der Zug fährt um acht Uhr ab, und wir müssen noch die Fahrkarten kaufen.",
    "Le petit déjeuner est servi de sept heures à dix heures dans la salle du rez-de-chaussée.",
    "El mercado abre los sábados por la mañana y vende frutas, verduras y pan fresco.",
    "Children learn languages quickly when they hear them every day at home and at school.",
]
