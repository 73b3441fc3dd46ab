# Svenska: appens standardspråk. Varje synlig text i appen kommer härifrån eller från en.ftl.
app-name = Stad för stad
language-name = Svenska
skip-to-content = Hoppa till innehållet
nav-label = Huvudmeny
nav-start = Start
nav-lessons = Lärdomar
nav-signals = Signaler
nav-access-log = Åtkomstlogg
node-city = { $city }
node-hub = Nationella noden
role-reader = Läsare
role-editor = Redaktör
role-coordinator = Samordnare
role-admin = Administratör
sign-out = Logga ut
footer = Stad för stad – lokala nätverk mot människohandel
back-to-start = Till startsidan
cancel = Avbryt
pages-label = Sidor
pages-first = Första sidan
pages-next = Nästa sida

date = { $day } { $month } { $year }
month-1 = jan.
month-2 = feb.
month-3 = mars
month-4 = apr.
month-5 = maj
month-6 = juni
month-7 = juli
month-8 = aug.
month-9 = sep.
month-10 = okt.
month-11 = nov.
month-12 = dec.

login-title = Logga in
login-intro = Logga in med den API-nyckel som din administratör gav dig.
login-token = API-nyckel
login-token-help = Nyckeln börjar med sfs_. Den sparas bara i serverns minne under inloggningen.
login-submit = Logga in
login-code-intro = Du har öppnat en inloggningslänk. Den kan bara användas en gång.
login-with-link = Logga in med länken
login-code-invalid = Inloggningslänken är redan använd eller för gammal. Be om en ny eller logga in med din API-nyckel.
login-token-missing = Skriv in din API-nyckel.
login-token-invalid = Noden känner inte igen den API-nyckeln.

error-title = Något gick fel
error-csrf = Formuläret kunde inte skickas: kontrolltoken saknas eller stämmer inte. Ladda om sidan och försök igen.
error-forbidden = Din roll får inte göra detta.
error-not-found = Sidan eller posten finns inte.
error-unavailable = Noden svarar inte just nu. Försök igen om en stund.
error-invalid = Noden tog inte emot uppgifterna.
error-internal = Ett internt fel inträffade.
error-too-large = Formuläret är för stort.
error-empty = Fältet får inte vara tomt.
error-too-long = Texten är för lång.
error-field = Noden tog inte emot värdet: { $detail }
error-personal-data = Texten innehåller något som ser ut som { $kind }. Delad text sparas för alltid och får inte innehålla personuppgifter. Ta bort uppgiften och spara igen.
kind-personal-identity-number = ett personnummer
kind-coordination-number = ett samordningsnummer
kind-phone-number = ett telefonnummer
kind-email-address = en e-postadress
kind-street-address = en gatuadress
kind-contact-name = namnet på en av stadens kontaktpersoner
kind-denied-word = ett ord på stadens spärrlista

start-title = Start
start-since = Nytt sedan ditt senaste besök { $date }
start-first-visit = Välkommen! Det här är ditt första besök.
start-new-lessons = Nya lärdomar från andra städer
start-no-new-lessons = Inga nya lärdomar sedan ditt senaste besök.
start-all-lessons = Alla lärdomar
start-handbook = Handboken
start-no-release = Ingen handboksversion har kommit än.
start-release = Staden kör handboksversion { $release }.
start-release-new = Ny
start-signals-waiting = { $count ->
    [one] En signal väntar på uppföljning.
   *[other] { $count_text } signaler väntar på uppföljning.
}
start-open-signals = Visa nya signaler
start-meetings = Kommande möten

lessons-title = Lärdomar
lessons-filter = Filtrera lärdomar
lessons-search = Sök
lessons-tag = Tagg
lessons-city = Stad
lessons-all-cities = Alla städer
lessons-step = Metodsteg
lessons-all-steps = Alla steg
lessons-apply = Visa
lessons-none = Inga lärdomar matchar.
lessons-total = { $count ->
    [one] En lärdom
   *[other] { $count_text } lärdomar
}
lessons-live-new = Nya lärdomar har kommit. Listan är uppdaterad.
lessons-back = Tillbaka till lärdomarna
lesson-new = Skriv en lärdom
lesson-edit = Redigera
lesson-archive = Arkivera
lesson-archived = Arkiverad
lesson-step = Steg: { $step }
lesson-tags = Taggar
lesson-field-title = Rubrik
lesson-field-body = Text
lesson-body-help = Delas med alla städer och sparas för alltid: skriv inga personuppgifter.
lesson-field-tags = Taggar
lesson-tags-help = Skilj taggar åt med kommatecken.
lesson-field-step = Metodsteg
lesson-no-step = Inget steg
lesson-save = Spara

signals-title = Signaler
signals-logged = Signaler innehåller personuppgifter. Varje visning och ändring skrivs i åtkomstloggen.
signals-all = Alla
signals-total = { $count ->
    [one] En signal
   *[other] { $count_text } signaler
}
signals-back = Tillbaka till signalerna
signal-new = Ny signal
signal-save = Spara signalen
signal-field-date = Datum
signal-field-organisation = Rapporterande organisation
signal-field-kind = Typ
signal-field-description = Beskrivning
signal-field-status = Status
signal-field-action = Ny uppföljning: vad ska göras
signal-field-owner = Vem gör det
signal-field-due = Senast
signal-follow-ups = Uppföljningar
signal-no-follow-ups = Inga uppföljningar än.
signal-follow-up = Följ upp
signal-update = Spara ändringen
signal-due = senast { $date }
signal-done = klar
signal-kind-signal = Signal
signal-kind-support_contact = Stödkontakt
signal-status-new = Ny
signal-status-referred = Hänvisad
signal-status-in_support = I stöd
signal-status-closed = Avslutad
unknown-organisation = Okänd organisation

access-log-title = Åtkomstlogg
access-log-intro = Vem som läste eller ändrade personuppgifter, och när (svensk tid).
access-log-total = { $count ->
    [one] En händelse
   *[other] { $count_text } händelser
}
access-log-time = Tid
access-log-actor = Vem
access-log-action = Vad
access-log-resource = Post
access-action-read = läste
access-action-list = listade
access-action-create = skapade
access-action-update = ändrade
access-action-erase = raderade

nav-statistics = Statistik
nav-national = Nationell statistik
stats-title = Statistik
stats-intro = Uppgifterna om enskilda personer stannar i staden. Bara tabeller som skyddar dem publiceras.
stats-saved = Uppgiften är sparad.
stats-published = Kvartalet { $quarter } är publicerat.
stats-quarter = Kvartal
stats-quarter-help = Skrivs som 2026-Q3.
stats-records = { $count ->
    [one] En stödinsats registrerad detta kvartal.
   *[other] { $count_text } stödinsatser registrerade detta kvartal.
}
stats-support-record = Ny stödinsats
stats-sex = Kön
stats-age-band = Ålder
stats-citizenship = Medborgarskap
stats-exploitation = Form av exploatering
stats-referral-source = Vem hänvisade
stats-person-ref = Ärendereferens
stats-person-ref-help = Stannar i staden; används bara för att räkna varje person en gång.
stats-save-record = Spara
stats-activity-record = Ny aktivitet
stats-activity = Aktivitet
stats-count = Antal
stats-count-invalid = Antalet måste vara ett heltal.
stats-preview = Förhandsgranska
stats-preview-intro = Se tabellerna exakt som de skulle publiceras, med dolda celler markerade.
stats-preview-quarter = Förhandsgranska { $quarter }
stats-published-title = Publicerade kvartal
stats-none-published = Inget kvartal är publicerat än.
stats-published-line = Kvartal { $quarter }
stats-release-number = publicering { $number }
stats-back = Tillbaka till statistiken
stats-hidden-explained = Dolda celler visas inte: små tal döljs så att ingen person kan pekas ut, och ibland en cell till så att de dolda inte kan räknas fram ur summorna.
stats-activity-title = Aktiviteter
stats-publish = Publicera
stats-confirm = Jag har granskat tabellerna och vill publicera dem för alla städer.
stats-publish-quarter = Publicera { $quarter }
stats-confirm-missing = Bekräfta att du har granskat tabellerna innan du publicerar.
national-title = Nationell statistik
national-year = År
national-legend = Så läser du tabellerna
legend-lower-bound-sample = ≥ 12
legend-noisy-sample = ≈ 12
national-csv = Ladda ner som CSV
national-none = Inga publicerade siffror för året än.
national-period = Period { $period }
cell-total = Totalt
cell-hidden = dold
cell-hidden-primary = Dold: ett litet tal som kunde peka ut personer.
cell-hidden-secondary = Dold: skyddar en annan dold cell.
cell-noisy = Ungefärligt: talet har fått slumpbrus för att skydda personer.
cell-lower-bound = Minst: någon stad har dolt sin del, så det verkliga talet är minst så här stort.
cell-lower-bound-noisy = Minst, och ungefärligt.
table-exploitation_by_sex = Form av exploatering efter kön
table-exploitation_by_age_group = Form av exploatering efter åldersgrupp
table-citizenship_by_sex = Medborgarskap efter kön
table-referral_source = Vem hänvisade
cat-female = Kvinna
cat-male = Man
cat-other_or_unknown = Annat eller okänt
cat-unknown = Okänt
cat-child = Barn
cat-adult = Vuxen
cat-swedish = Svenskt
cat-other_eu = Annat EU-land
cat-non_eu = Utanför EU
cat-sexual = Sexuell
cat-forced_labour = Tvångsarbete
cat-forced_criminality = Tvång att begå brott
cat-begging = Tiggeri
cat-other = Annan
cat-police = Polisen
cat-social_services = Socialtjänsten
cat-civil_society = Civilsamhället
cat-business = Näringslivet
cat-self_or_other = Personen själv eller annan
activity-trainings_held = Utbildningar
activity-people_trained = Utbildade personer
activity-outreach_sessions = Uppsökande insatser
activity-network_meetings = Nätverksmöten
activity-businesses_enrolled = Anslutna företag
