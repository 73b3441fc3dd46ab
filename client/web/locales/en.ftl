# English. Every visible string of the app comes from here or from sv.ftl.
app-name = City by city
language-name = English
skip-to-content = Skip to content
nav-label = Main menu
nav-start = Start
nav-lessons = Lessons
nav-signals = Signals
nav-access-log = Access log
node-city = { $city }
node-hub = National hub
role-reader = Reader
role-editor = Editor
role-coordinator = Coordinator
role-admin = Administrator
sign-out = Sign out
footer = City by city – local networks against human trafficking
back-to-start = To the start page
cancel = Cancel
pages-label = Pages
pages-first = First page
pages-next = Next page

date = { $day } { $month } { $year }
month-1 = Jan
month-2 = Feb
month-3 = Mar
month-4 = Apr
month-5 = May
month-6 = Jun
month-7 = Jul
month-8 = Aug
month-9 = Sep
month-10 = Oct
month-11 = Nov
month-12 = Dec

login-title = Sign in
login-intro = Sign in with the API token your administrator gave you.
login-token = API token
login-token-help = The token starts with sfs_. It is kept only in the server's memory while you are signed in.
login-submit = Sign in
login-code-intro = You opened a sign-in link. It can be used once.
login-with-link = Sign in with the link
login-code-invalid = The sign-in link was already used or is too old. Ask for a new one or sign in with your API token.
login-token-missing = Enter your API token.
login-token-invalid = The node does not know that API token.

error-title = Something went wrong
error-csrf = The form could not be sent: its check token is missing or wrong. Reload the page and try again.
error-forbidden = Your role may not do this.
error-not-found = The page or record does not exist.
error-unavailable = The node is not answering right now. Try again in a moment.
error-invalid = The node did not accept the data.
error-internal = An internal error occurred.
error-too-large = The form is too large.
error-empty = The field must not be empty.
error-too-long = The text is too long.
error-field = The node did not accept the value: { $detail }
error-personal-data = The text holds what looks like { $kind }. Shared text is kept forever and must not hold personal data. Remove it and save again.
kind-personal-identity-number = a personal identity number
kind-coordination-number = a coordination number
kind-phone-number = a phone number
kind-email-address = an e-mail address
kind-street-address = a street address
kind-contact-name = the name of one of the city's contact persons
kind-denied-word = a word on the city's deny list

start-title = Start
start-since = New since your last visit { $date }
start-first-visit = Welcome! This is your first visit.
start-new-lessons = New lessons from other cities
start-no-new-lessons = No new lessons since your last visit.
start-all-lessons = All lessons
start-handbook = The handbook
start-no-release = No handbook release has arrived yet.
start-release = The city runs handbook release { $release }.
start-release-new = New
start-signals-waiting = { $count ->
    [one] One signal awaits follow-up.
   *[other] { $count_text } signals await follow-up.
}
start-open-signals = Show new signals
start-meetings = Next meetings

lessons-title = Lessons
lessons-filter = Filter lessons
lessons-search = Search
lessons-tag = Tag
lessons-city = City
lessons-all-cities = All cities
lessons-step = Method step
lessons-all-steps = All steps
lessons-apply = Show
lessons-none = No lessons match.
lessons-total = { $count ->
    [one] One lesson
   *[other] { $count_text } lessons
}
lessons-live-new = New lessons arrived. The list is up to date.
lessons-back = Back to the lessons
lesson-new = Write a lesson
lesson-edit = Edit
lesson-archive = Archive
lesson-archived = Archived
lesson-step = Step: { $step }
lesson-tags = Tags
lesson-field-title = Title
lesson-field-body = Text
lesson-body-help = Shared with every city and kept forever: write no personal data.
lesson-field-tags = Tags
lesson-tags-help = Separate tags with commas.
lesson-field-step = Method step
lesson-no-step = No step
lesson-save = Save

signals-title = Signals
signals-logged = Signals hold personal data. Every view and change is written to the access log.
signals-all = All
signals-total = { $count ->
    [one] One signal
   *[other] { $count_text } signals
}
signals-back = Back to the signals
signal-new = New signal
signal-save = Save the signal
signal-field-date = Date
signal-field-organisation = Reporting organisation
signal-field-kind = Kind
signal-field-description = Description
signal-field-status = Status
signal-field-action = New follow-up: what is to be done
signal-field-owner = Who does it
signal-field-due = Due
signal-follow-ups = Follow-ups
signal-no-follow-ups = No follow-ups yet.
signal-follow-up = Follow up
signal-update = Save the change
signal-due = due { $date }
signal-done = done
signal-kind-signal = Signal
signal-kind-support_contact = Support contact
signal-status-new = New
signal-status-referred = Referred
signal-status-in_support = In support
signal-status-closed = Closed
unknown-organisation = Unknown organisation

access-log-title = Access log
access-log-intro = Who read or changed personal data, and when (Swedish time).
access-log-total = { $count ->
    [one] One entry
   *[other] { $count_text } entries
}
access-log-time = Time
access-log-actor = Who
access-log-action = What
access-log-resource = Record
access-action-read = read
access-action-list = listed
access-action-create = created
access-action-update = changed
access-action-erase = erased

nav-statistics = Statistics
nav-national = National statistics
stats-title = Statistics
stats-intro = Records about individuals stay in the city. Only tables that protect them are published.
stats-saved = The record is saved.
stats-published = The quarter { $quarter } is published.
stats-quarter = Quarter
stats-quarter-help = Written as 2026-Q3.
stats-records = { $count ->
    [one] One person supported recorded this quarter.
   *[other] { $count_text } people supported recorded this quarter.
}
stats-support-record = New support record
stats-sex = Sex
stats-age-band = Age
stats-citizenship = Citizenship
stats-exploitation = Form of exploitation
stats-referral-source = Referred by
stats-person-ref = Case reference
stats-person-ref-help = Stays in the city; only used to count each person once.
stats-save-record = Save
stats-activity-record = New activity
stats-activity = Activity
stats-count = Count
stats-count-invalid = The count must be a whole number.
stats-preview = Preview
stats-preview-intro = See the tables exactly as they would be published, hidden cells marked.
stats-preview-quarter = Preview { $quarter }
stats-published-title = Published quarters
stats-none-published = No quarter is published yet.
stats-published-line = Quarter { $quarter }
stats-release-number = publication { $number }
stats-back = Back to the statistics
stats-hidden-explained = Hidden cells are not shown: small counts are hidden so that no person can be singled out, and sometimes one more cell so the hidden ones cannot be worked out from the totals.
stats-activity-title = Activities
stats-publish = Publish
stats-confirm = I have reviewed the tables and want to publish them to every city.
stats-publish-quarter = Publish { $quarter }
stats-confirm-missing = Confirm that you reviewed the tables before publishing.
national-title = National statistics
national-year = Year
national-legend = How to read the tables
legend-lower-bound-sample = ≥ 12
legend-noisy-sample = ≈ 12
national-csv = Download as CSV
national-none = No published figures for the year yet.
national-period = Period { $period }
cell-total = Total
cell-hidden = hidden
cell-hidden-primary = Hidden: a small count that could single out people.
cell-hidden-secondary = Hidden: protects another hidden cell.
cell-noisy = Approximate: random noise was added to protect people.
cell-lower-bound = At least: some city hid its part, so the true value is at least this.
cell-lower-bound-noisy = At least, and approximate.
table-exploitation_by_sex = Form of exploitation by sex
table-exploitation_by_age_group = Form of exploitation by age group
table-citizenship_by_sex = Citizenship by sex
table-referral_source = Referred by
cat-female = Female
cat-male = Male
cat-other_or_unknown = Other or unknown
cat-unknown = Unknown
cat-child = Child
cat-adult = Adult
cat-swedish = Swedish
cat-other_eu = Other EU country
cat-non_eu = Outside the EU
cat-sexual = Sexual
cat-forced_labour = Forced labour
cat-forced_criminality = Forced criminality
cat-begging = Begging
cat-other = Other
cat-police = Police
cat-social_services = Social services
cat-civil_society = Civil society
cat-business = Business
cat-self_or_other = The person or someone else
activity-trainings_held = Trainings held
activity-people_trained = People trained
activity-outreach_sessions = Outreach sessions
activity-network_meetings = Network meetings
activity-businesses_enrolled = Businesses enrolled
