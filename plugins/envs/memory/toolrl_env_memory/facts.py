"""The facts a simulated customer states and later relies on (the `memory` suite's vocabulary).

Each `Slot` is one kind of fact: how a customer says it (`statements`), how
they change it later (`updates`), a later request that needs it
(`questions`), and a reference reply that uses it (`reference`). `{v}` is the
value. Questions never contain the value, so answering them needs memory.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Slot:
    name: str
    values: tuple[str, ...]
    statements: tuple[str, ...]
    updates: tuple[str, ...]
    questions: tuple[str, ...]
    reference: str


SLOTS: tuple[Slot, ...] = (
    Slot("phone", ("Pixel 7", "iPhone 13 mini", "Galaxy S21", "OnePlus 9", "Moto G Power", "Xperia 5"),
         ("By the way, my phone is a {v}.", "I'm using a {v}, in case that matters."),
         ("I replaced my old phone, I now use a {v}.",),
         ("Can you recommend a case that fits my phone?", "Which screen protector should I buy for my phone?"),
         "Since you use a {v}, pick one made for the {v}."),
    Slot("order", ("#48213", "#55102", "#60937", "#71244", "#83019", "#90466"),
         ("My order number is {v}, it still hasn't arrived.", "I'm writing about order {v}."),
         ("Sorry, the right order number is actually {v}.",),
         ("What was the number of the order I complained about?", "Can you check the status of my late order?"),
         "That is order {v}."),
    Slot("city", ("Lisbon", "Toronto", "Osaka", "Nairobi", "Melbourne", "Krakow"),
         ("Please ship everything to my address in {v}.", "I live in {v}, so deliveries go there."),
         ("I moved, ship to {v} from now on.",),
         ("Where should you ship my new order?", "How long will delivery take to where I live?"),
         "It will ship to {v}."),
    Slot("allergy", ("peanuts", "shellfish", "gluten", "lactose", "sesame", "soy"),
         ("Just so you know, I'm allergic to {v}.", "I can't have {v}, I'm allergic."),
         ("My doctor says my allergy is actually to {v}.",),
         ("Can you suggest a snack box for me?", "Which of your meal kits is safe for me?"),
         "I'll pick one without {v}, since you are allergic to {v}."),
    Slot("shoe_size", ("38", "40", "42", "43", "44", "46"),
         ("I wear size {v} shoes.", "My shoe size is {v}."),
         ("My feet are a size {v} now, believe it or not.",),
         ("Which size should I order the running shoes in?", "Can you put the hiking boots in my size in the cart?"),
         "I'll choose size {v}."),
    Slot("pet", ("Biscuit", "Luna", "Pepper", "Rocky", "Mochi", "Ziggy"),
         ("My dog {v} chewed through the last cable.", "The toy is for my dog, {v}."),
         ("We renamed the puppy, he's called {v} now.",),
         ("Can you engrave my dog's name on the new collar?", "What name should go on the pet tag?"),
         "The engraving will say {v}."),
    Slot("color", ("teal", "burgundy", "mustard", "lavender", "charcoal", "coral"),
         ("My favourite colour is {v}.", "I always go for {v} when there's a choice."),
         ("I'm over that colour, these days I prefer {v}.",),
         ("Which colour should I get the new backpack in?", "Pick a colour for my new water bottle, please."),
         "I'd go with {v}, your favourite colour."),
    Slot("contact", ("email", "text message", "phone call", "WhatsApp"),
         ("Please contact me by {v} only.", "The best way to reach me is {v}."),
         ("Change of plan: reach me by {v} from now on.",),
         ("How will you let me know when the refund goes through?", "How will you notify me about the delivery?"),
         "We will let you know by {v}."),
    Slot("laptop", ("ThinkPad X1", "MacBook Air M2", "Dell XPS 13", "Surface Laptop 5", "Zenbook 14"),
         ("My laptop is a {v}.", "I do all my work on a {v}."),
         ("I switched laptops, it's a {v} now.",),
         ("Which charger do I need for my laptop?", "Will the docking station work with my laptop?"),
         "For your {v}, use the charger made for the {v}."),
    Slot("diet", ("vegetarian", "vegan", "pescatarian", "keto"),
         ("I'm {v}, so keep that in mind for food orders.", "I follow a {v} diet."),
         ("I've gone {v} since we last talked.",),
         ("What should I order from the recipe box this week?", "Recommend a dinner kit for me."),
         "A {v} kit fits your diet."),
    Slot("plan", ("Premium", "Basic", "Family", "Student"),
         ("I'm on the {v} plan.", "My subscription is the {v} plan."),
         ("I changed my subscription to the {v} plan.",),
         ("Which subscription plan am I on?", "Does my plan include free returns?"),
         "You are on the {v} plan."),
    Slot("birthday", ("March 3", "June 21", "August 14", "October 30", "December 9"),
         ("My birthday is on {v}.", "Fun fact, my birthday is {v}."),
         ("I typed my birthday wrong before, it's {v}.",),
         ("When should the birthday discount be applied for me?", "On which day will I get my birthday voucher?"),
         "Your birthday voucher comes on {v}."),
    Slot("printer", ("LaserJet M110", "PIXMA G620", "EcoTank ET-2800", "WorkForce WF-7840"),
         ("The printer I have is a {v}.", "I need ink for my {v}."),
         ("I bought a new printer, a {v}.",),
         ("Which ink cartridges fit my printer?", "Can you reorder ink for my printer?"),
         "I'll order ink for your {v}."),
    Slot("language", ("Portuguese", "Japanese", "Polish", "Swahili", "Greek"),
         ("I'd prefer invoices in {v}, please.", "My first language is {v}."),
         ("Please switch my documents to {v}.",),
         ("In which language should the manual be?", "Which language should my invoices be in?"),
         "I'll send it in {v}."),
    Slot("budget", ("50 dollars", "120 dollars", "200 dollars", "75 dollars", "300 dollars"),
         ("My budget is about {v}.", "I don't want to spend more than {v}."),
         ("I can stretch my budget to {v} now.",),
         ("Can you suggest headphones within my budget?", "Find me a gift that fits my budget."),
         "I'll stay within your budget of {v}."),
    Slot("partner", ("Amira", "Jonas", "Priya", "Mateo", "Ingrid", "Kwame"),
         ("The gift is for my partner, {v}.", "My partner {v} usually picks up the parcels."),
         ("My partner is {v}, please update that.",),
         ("Who is allowed to pick up my parcels?", "Whose name should go on the gift card?"),
         "I'll put {v} on it."),
)

FILLERS: tuple[str, ...] = (
    "The app logged me out again this morning.",
    "Thanks, that fixed it!",
    "Is the summer sale still on?",
    "How long does a refund usually take?",
    "The tracking page just says 'in transit'.",
    "I couldn't find the return label in the box.",
    "Do you have a loyalty programme?",
    "The package arrived a bit damaged, but it works.",
    "Can I change the delivery time slot?",
    "Your website was really slow yesterday.",
    "I'll check my email for the confirmation.",
    "Great service last time, by the way.",
    "Is there a discount code for new customers?",
    "I accidentally ordered two of the same item.",
    "Can you remind me how gift wrapping works?",
    "The password reset link expired.",
)

NAMES: tuple[str, ...] = (
    "Alex", "Sam", "Maria", "Chen", "Fatima", "Lukas", "Aisha", "Diego", "Hana", "Omar", "Elena", "Tom", "Yuki",
    "Noah", "Zara", "Ivan", "Leila", "Ben", "Sofia", "Ravi",
)
