"""The vocabulary the catalog generator draws from: categories, product types, attributes, options, text.

Each :class:`ProductType` is what WebShop calls a product's ``query`` (the search that scraped it), with its
``product_category`` path, the attribute phrases products of that type may have (WebShop's ``Attributes``, the
goal attributes of an instruction) and its customization options (WebShop's ``options``: size, color, flavor
name, ...).

The vocabulary is chosen so that WebShop's reward separates right from wrong purchases on generated products:
within a type no two attributes and no two values of one option are a fuzzy match of each other
(``token_set_ratio`` > 85, WebShop's threshold, after its colour normalisation), and the generic text never
contains an attribute or option value (WebShop also credits an attribute or option found in the title, bullet
points or description). ``tests/envs/test_webshop_catalog.py`` checks both properties.
"""

from __future__ import annotations

from dataclasses import dataclass, field

#: WebShop's category separator in ``product_category`` paths.
PATH_SEP = " \u203a "


@dataclass(frozen=True)
class ProductType:
    category: str
    query: str
    path: tuple[str, ...]
    #: singular noun phrase used in instructions ("clip-in hair extension")
    noun: str
    #: noun phrase used in titles ("Clip-In Hair Extensions")
    title_noun: str
    descriptors: tuple[str, ...]
    attributes: tuple[str, ...]
    options: dict[str, tuple[str, ...]] = field(default_factory=dict)
    price: tuple[float, float] = (10.0, 50.0)

    @property
    def product_category(self) -> str:
        return PATH_SEP.join(self.path)


def _t(category, query, path, noun, title_noun, descriptors, attributes, options, price) -> ProductType:
    return ProductType(category, query, tuple(path.split(" > ")), noun, title_noun, tuple(descriptors),
                       tuple(attributes), {k: tuple(v) for k, v in options.items()}, price)


# The last type of every category is held out: its goals only appear in the ``eval_out`` split.
PRODUCT_TYPES: tuple[ProductType, ...] = (
    # ----------------------------------------------------------------------------------------- beauty
    _t("beauty", "hair extensions",
       "Beauty & Personal Care > Hair Care > Hair Extensions, Wigs & Accessories > Extensions",
       "clip-in hair extension", "Clip-In Hair Extensions", ["Straight", "Wavy", "Seamless", "Thick", "Silky"],
       ["natural looking", "heat resistant", "easy to apply", "tangle free", "double weft", "human hair"],
       {"color": ["black", "chestnut", "auburn", "platinum", "burgundy", "honey blonde"],
        "size": ["14 inch", "16 inch", "18 inch", "20 inch", "22 inch"]}, (18.0, 95.0)),
    _t("beauty", "face moisturizer",
       "Beauty & Personal Care > Skin Care > Face > Creams & Moisturizers > Face Moisturizers",
       "face moisturizer", "Face Moisturizer Cream", ["Daily", "Hydrating", "Overnight", "Gentle", "Renewing"],
       ["fragrance free", "hyaluronic acid", "dry skin", "cruelty free", "non greasy", "dermatologist tested"],
       {"scent": ["unscented", "cucumber", "rose", "vanilla", "aloe vera"],
        "size": ["1.7 fl oz", "2.5 fl oz", "3.4 fl oz", "5 fl oz"]}, (9.0, 60.0)),
    _t("beauty", "shampoo",
       "Beauty & Personal Care > Hair Care > Shampoo & Conditioner > Shampoos",
       "shampoo", "Shampoo", ["Clarifying", "Volumizing", "Nourishing", "Daily", "Repair"],
       ["sulfate free", "color safe", "dry hair", "natural ingredients", "paraben free", "hair growth"],
       {"scent": ["coconut", "argan oil", "tea tree", "eucalyptus", "citrus"],
        "size": ["8 fl oz", "12 fl oz", "16 fl oz", "32 fl oz"]}, (6.0, 40.0)),
    _t("beauty", "lipstick",
       "Beauty & Personal Care > Makeup > Lips > Lipstick",
       "lipstick", "Lipstick", ["Velvet", "Satin", "Creamy", "Bold", "Classic"],
       ["long lasting", "matte finish", "cruelty free", "highly pigmented", "hydrating formula", "transfer proof"],
       {"color": ["coral", "nude", "plum", "mauve", "crimson", "berry"]}, (5.0, 35.0)),
    _t("beauty", "nail polish",
       "Beauty & Personal Care > Foot, Hand & Nail Care > Nail Art & Polish > Nail Polish",
       "nail polish", "Nail Polish", ["Glossy", "Salon", "Shimmer", "Classic", "Quick"],
       ["quick drying", "chip resistant", "non toxic", "long wear", "high shine"],
       {"color": ["lilac", "teal", "coral", "nude", "magenta", "sapphire"],
        "size": ["0.5 fl oz (pack of 1)", "0.5 fl oz (pack of 3)", "0.5 fl oz (pack of 6)"]}, (4.0, 25.0)),
    _t("beauty", "natural deodorant",
       "Beauty & Personal Care > Personal Care > Deodorants & Antiperspirants > Deodorant",
       "natural deodorant", "Natural Deodorant", ["Fresh", "Everyday", "Gentle", "Clean", "Herbal"],
       ["aluminum free", "sensitive skin", "baking soda free", "vegan", "odor protection"],
       {"scent": ["lavender", "citrus", "cedarwood", "unscented", "eucalyptus"],
        "size": ["2.65 ounce (pack of 1)", "2.65 ounce (pack of 2)", "3 ounce (pack of 3)"]}, (6.0, 30.0)),
    # ---------------------------------------------------------------------------------------- grocery
    _t("grocery", "protein bars",
       "Grocery & Gourmet Food > Snacks & Sweets > Bars > Protein Bars",
       "protein bar", "Protein Bars", ["Chewy", "Crunchy", "Layered", "Soft Baked", "Energy"],
       ["gluten free", "low sugar", "high protein", "keto friendly", "non gmo", "plant based"],
       {"flavor name": ["peanut butter", "chocolate chip", "cookie dough", "birthday cake", "salted caramel"],
        "size": ["12 count (pack of 1)", "12 count (pack of 2)", "24 count"]}, (12.0, 45.0)),
    _t("grocery", "ground coffee",
       "Grocery & Gourmet Food > Beverages > Coffee, Tea & Cocoa > Coffee > Ground Coffee",
       "ground coffee", "Ground Coffee", ["Smooth", "Bold", "Signature", "House", "Morning"],
       ["fair trade", "usda organic", "single origin", "low acid", "kosher certified"],
       {"flavor name": ["french vanilla", "hazelnut", "colombian", "breakfast blend", "dark roast"],
        "size": ["12 ounce", "24 ounce", "2 pound"]}, (7.0, 35.0)),
    _t("grocery", "herbal tea",
       "Grocery & Gourmet Food > Beverages > Coffee, Tea & Cocoa > Tea > Herbal",
       "herbal tea", "Herbal Tea Bags", ["Soothing", "Calming", "Bedtime", "Wellness", "Pure"],
       ["caffeine free", "usda organic", "non gmo", "individually wrapped", "kosher certified"],
       {"flavor name": ["chamomile", "peppermint", "ginger", "hibiscus", "lemon balm"],
        "size": ["20 count (pack of 1)", "20 count (pack of 6)", "100 count"]}, (4.0, 28.0)),
    _t("grocery", "mixed nuts",
       "Grocery & Gourmet Food > Snacks & Sweets > Nuts & Seeds > Mixed Nuts",
       "mixed nuts", "Mixed Nuts", ["Deluxe", "Premium", "Trail", "Roasted", "Classic"],
       ["unsalted", "resealable bag", "non gmo", "keto friendly", "high protein"],
       {"flavor name": ["sea salt", "honey roasted", "smoked", "cinnamon"],
        "size": ["8 ounce", "16 ounce", "2.5 pound"]}, (6.0, 30.0)),
    _t("grocery", "hot sauce",
       "Grocery & Gourmet Food > Condiments & Salad Dressings > Hot Sauce",
       "hot sauce", "Hot Sauce", ["Fiery", "Smoky", "Original", "Reserve", "Extra Hot"],
       ["sugar free", "no preservatives", "gluten free", "small batch", "vegan"],
       {"flavor name": ["habanero", "chipotle", "garlic", "ghost pepper", "jalapeno"],
        "size": ["5 fl oz", "5 fl oz (pack of 2)", "12 fl oz"]}, (4.0, 22.0)),
    _t("grocery", "granola",
       "Grocery & Gourmet Food > Breakfast Foods > Cereals > Granola",
       "granola", "Granola Cereal", ["Crunchy", "Clusters", "Ancient Grain", "Homestyle", "Oven Baked"],
       ["low sugar", "whole grain", "gluten free", "non gmo", "high fiber"],
       {"flavor name": ["honey almond", "blueberry", "maple pecan", "coconut cashew"],
        "size": ["11 ounce", "11 ounce (pack of 3)", "32 ounce"]}, (4.0, 24.0)),
    # ---------------------------------------------------------------------------------------- fashion
    _t("fashion", "women running shoes",
       "Clothing, Shoes & Jewelry > Women > Shoes > Athletic > Running > Road Running",
       "women's running shoe", "Women's Running Shoes", ["Cushioned", "Trail", "Road", "Sport", "Stride"],
       ["non slip", "breathable mesh", "memory foam", "arch support", "rubber sole"],
       {"color": ["black", "white", "navy", "pink", "grey"],
        "size": ["6", "6.5", "7", "7.5", "8", "8.5", "9", "10"]}, (25.0, 120.0)),
    _t("fashion", "men t-shirt",
       "Clothing, Shoes & Jewelry > Men > Clothing > Shirts > T-Shirts",
       "men's t-shirt", "Men's T-Shirt", ["Crew Neck", "Classic", "Athletic", "Essential", "Vintage"],
       ["moisture wicking", "machine wash", "short sleeve", "slim fit", "tagless"],
       {"color": ["black", "white", "grey", "olive", "navy", "maroon"],
        "size": ["small", "medium", "large", "x-large", "xx-large"]}, (8.0, 40.0)),
    _t("fashion", "women summer dress",
       "Clothing, Shoes & Jewelry > Women > Clothing > Dresses > Casual",
       "women's summer dress", "Women's Summer Dress", ["Boho", "Maxi", "Midi", "Wrap", "Sundress"],
       ["side pockets", "v neck", "short sleeve", "polyester spandex", "machine wash"],
       {"color": ["floral print", "coral", "teal", "ivory", "burgundy"],
        "size": ["x-small", "small", "medium", "large", "x-large"]}, (18.0, 60.0)),
    _t("fashion", "laptop backpack",
       "Clothing, Shoes & Jewelry > Luggage & Travel Gear > Backpacks > Laptop Backpacks",
       "laptop backpack", "Laptop Backpack", ["Travel", "Business", "Commuter", "Slim", "College"],
       ["water resistant", "usb charging port", "anti theft", "padded straps", "multiple compartments"],
       {"color": ["black", "grey", "navy", "khaki"]}, (20.0, 80.0)),
    _t("fashion", "men slim jeans",
       "Clothing, Shoes & Jewelry > Men > Clothing > Jeans",
       "men's slim jeans", "Men's Slim Jeans", ["Tapered", "Skinny", "Straight Leg", "Classic", "Modern"],
       ["slim fit", "stretch fabric", "button closure", "five pocket", "machine wash"],
       {"color": ["indigo", "black", "charcoal", "khaki"],
        "size": ["30w x 30l", "32w x 32l", "34w x 32l", "36w x 34l"]}, (20.0, 70.0)),
    _t("fashion", "women puffer jacket",
       "Clothing, Shoes & Jewelry > Women > Clothing > Coats, Jackets & Vests > Down & Down Alternative",
       "women's puffer jacket", "Women's Puffer Jacket", ["Quilted", "Winter", "Hooded", "Cropped", "Long"],
       ["water resistant", "zipper closure", "thermal lining", "packable", "detachable hood"],
       {"color": ["black", "olive", "burgundy", "cream"],
        "size": ["small", "medium", "large", "x-large", "xx-large"]}, (35.0, 140.0)),
    # ------------------------------------------------------------------------------------ electronics
    _t("electronics", "wireless earbuds",
       "Electronics > Headphones, Earbuds & Accessories > Headphones & Earbuds > Earbud Headphones",
       "wireless earbud", "Wireless Earbuds", ["Bluetooth", "Sport", "Mini", "Pro", "In-Ear"],
       ["noise cancelling", "long battery life", "water resistant", "touch control", "charging case"],
       {"color": ["black", "white", "navy", "rose gold"]}, (15.0, 150.0)),
    _t("electronics", "phone case",
       "Electronics > Cell Phones & Accessories > Cases, Holsters & Sleeves > Basic Cases",
       "phone case", "Phone Case", ["Slim", "Rugged", "Armor", "Protective", "Hybrid"],
       ["shockproof", "wireless charging compatible", "raised edges", "slim design", "military grade"],
       {"color": ["black", "clear", "purple", "green"],
        "model": ["iphone 13", "galaxy s23", "pixel 8", "moto g"]}, (6.0, 35.0)),
    _t("electronics", "usb c charger",
       "Electronics > Computers & Accessories > Cables & Accessories > Power Adapters",
       "usb c charger", "USB C Charger", ["Fast", "Compact", "Travel", "Wall", "Dual Port"],
       ["fast charging", "foldable plug", "gan technology", "overheat protection", "universal compatibility"],
       {"color": ["white", "black"], "size": ["20w", "30w", "65w", "100w"]}, (9.0, 60.0)),
    _t("electronics", "hdmi cable",
       "Electronics > Computers & Accessories > Cables & Accessories > Cables > HDMI Cables",
       "hdmi cable", "HDMI Cable", ["High Speed", "Ultra", "Premium", "4K", "8K"],
       ["braided nylon", "gold plated connectors", "ethernet support", "hdr compatible", "aluminum shell"],
       {"color": ["black", "grey"], "size": ["3 feet", "6 feet", "10 feet", "15 feet"]}, (5.0, 30.0)),
    _t("electronics", "fitness tracker",
       "Electronics > Wearable Technology > Activity & Fitness Trackers",
       "fitness tracker", "Fitness Tracker", ["Smart", "Slim", "Sport", "Active", "Health"],
       ["heart rate monitor", "sleep tracking", "waterproof", "step counter", "long battery life"],
       {"color": ["black", "pink", "navy", "lavender"]}, (20.0, 110.0)),
    _t("electronics", "bluetooth speaker",
       "Electronics > Portable Audio & Video > Portable Speakers & Docks > Portable Bluetooth Speakers",
       "bluetooth speaker", "Bluetooth Speaker", ["Portable", "Outdoor", "Mini", "Party", "Wireless"],
       ["waterproof", "deep bass", "long battery life", "built in microphone", "stereo pairing"],
       {"color": ["black", "cobalt", "teal", "camo"]}, (18.0, 130.0)),
    # ------------------------------------------------------------------------------------------- home
    _t("home", "throw pillow covers",
       "Home & Kitchen > Bedding > Decorative Pillows, Inserts & Covers > Throw Pillow Covers",
       "throw pillow cover", "Throw Pillow Covers", ["Decorative", "Boho", "Farmhouse", "Velvet", "Modern"],
       ["hidden zipper", "machine washable", "double sided", "super soft", "set of 2"],
       {"color": ["beige", "sage green", "rust", "navy", "mustard"],
        "size": ["18 x 18 inch", "20 x 20 inch", "12 x 20 inch"]}, (8.0, 35.0)),
    _t("home", "office chair",
       "Home & Kitchen > Furniture > Home Office Furniture > Home Office Chairs > Desk Chairs",
       "office chair", "Office Chair", ["Ergonomic", "Executive", "Task", "Swivel", "Mid Back"],
       ["lumbar support", "adjustable height", "breathable mesh", "easy assembly", "padded armrests"],
       {"color": ["black", "grey", "white", "pink"]}, (60.0, 260.0)),
    _t("home", "bed sheet set",
       "Home & Kitchen > Bedding > Sheets & Pillowcases > Sheet & Pillowcase Sets",
       "bed sheet set", "Bed Sheet Set", ["Microfiber", "Percale", "Sateen", "Hotel", "Bamboo"],
       ["deep pocket", "wrinkle free", "cooling fabric", "machine washable", "hypoallergenic"],
       {"color": ["white", "ivory", "grey", "navy", "sage"],
        "size": ["twin", "full", "queen", "king"]}, (20.0, 90.0)),
    _t("home", "scented candle",
       "Home & Kitchen > Home Decor Products > Candles & Holders > Candles > Jar Candles",
       "scented candle", "Scented Candle", ["Jar", "Aromatherapy", "Luxury", "Cozy", "Cabin"],
       ["soy wax", "long burning", "lead free wick", "essential oils", "gift ready"],
       {"scent": ["lavender", "vanilla", "sandalwood", "fresh linen", "pumpkin spice"],
        "size": ["8 ounce", "12 ounce", "16 ounce"]}, (8.0, 40.0)),
    _t("home", "storage baskets",
       "Home & Kitchen > Storage & Organization > Baskets, Bins & Containers > Storage Baskets",
       "storage basket", "Storage Baskets", ["Woven", "Fabric", "Cube", "Rope", "Shelf"],
       ["foldable", "sturdy handles", "woven design", "lightweight", "stackable"],
       {"color": ["beige", "grey", "white", "khaki"],
        "size": ["set of 2", "set of 3", "set of 4"]}, (10.0, 45.0)),
    _t("home", "table lamp",
       "Home & Kitchen > Lighting & Ceiling Fans > Lamps & Shades > Table Lamps",
       "table lamp", "Table Lamp", ["Bedside", "Nightstand", "Modern", "Minimalist", "Vintage"],
       ["touch control", "usb charging port", "dimmable", "energy efficient", "bulb included"],
       {"color": ["black", "white", "brass", "walnut"]}, (15.0, 80.0)),
)

CATEGORIES: tuple[str, ...] = tuple(dict.fromkeys(t.category for t in PRODUCT_TYPES))

#: Held-out product types (the last of each category): their goals appear only in ``eval_out``.
HELD_OUT_TYPES: frozenset[int] = frozenset(
    max(i for i, t in enumerate(PRODUCT_TYPES) if t.category == c) for c in CATEGORIES
)

#: Invented brand names (proper nouns), one list per category so a wrong category shares no title noun.
BRANDS: dict[str, tuple[str, ...]] = {
    "beauty": ("Lumina", "Velora", "Purelle", "Aurelle", "Bellamie", "Dermaly", "Glowora", "Serenity",
               "Nuvessa", "Calista", "Mirabel", "Solenne", "Evanthe", "Rosaline", "Kalmia", "Odessa"),
    "grocery": ("Harvestly", "Grainwell", "Orchardine", "Bramblecroft", "Meadowfield", "Tastebud",
                "Kettleworth", "Fieldstone", "Sunnyvale", "Hearthside", "Wildacre", "Goodgrove", "Brookhaven",
                "Pantrywise", "Maplemere", "Copperpot"),
    "fashion": ("Stridewell", "Urbanite", "Northfold", "Marlowe", "Fenwick", "Threadline", "Cobaltis",
                "Everlane", "Halston", "Wrenford", "Jasperly", "Kingsleigh", "Dovetail", "Ashcombe", "Tallis",
                "Larkspur"),
    "electronics": ("Voltara", "Sonique", "Zentrix", "Quantro", "Nexava", "Ampliq", "Pixelon", "Orbitek",
                    "Wavelink", "Corelux", "Syntheon", "Teknova", "Lumatic", "Gridium", "Fluxon", "Arcadyne"),
    "home": ("Cozyhaven", "Nestwell", "Linenloft", "Hearthstone", "Willowmere", "Oakridge", "Homestead",
             "Stillwater", "Birchwood", "Driftwood", "Calmora", "Fernhill", "Larchmont", "Rosewood",
             "Thistledown", "Elmcroft"),
}

#: Generic title endings per category (no attribute or option words).
TITLE_SUFFIXES: dict[str, tuple[str, ...]] = {
    "beauty": ("for Women", "Salon Formula", "Everyday Beauty Care", "Professional Results", "Gift for Her"),
    "grocery": ("Pantry Staple", "Family Favorite", "Snack Time Treat", "Value Bundle", "Gourmet Selection"),
    "fashion": ("Everyday Wear", "Casual Style", "Comfort Collection", "Outdoor Adventures", "Travel Ready"),
    "electronics": ("Upgraded Version", "Latest Model", "for Home and Office", "Plug and Play", "Travel Friendly"),
    "home": ("Home Decor", "for Living Room", "Apartment Essentials", "Housewarming Gift", "Cozy Home"),
}

#: Generic bullet-point and description sentences per category. They mention no attribute or option value.
GENERIC_SENTENCES: dict[str, tuple[str, ...]] = {
    "beauty": (
        "Formulated by experts to fit into your everyday beauty routine.",
        "Each product is inspected by hand before shipping.",
        "Suitable for home use and for professional salons alike.",
        "Thoughtfully packaged, it makes a lovely present for birthdays and holidays.",
        "Apply as directed on the package for the best results.",
        "Our customer care team is happy to help with any question.",
        "A simple step that leaves you feeling confident all day.",
        "Designed with comfort in mind for daily use.",
    ),
    "grocery": (
        "Packed at peak freshness to lock in taste.",
        "A great addition to lunch boxes, road trips and office pantries.",
        "Store in a cool place after opening.",
        "Enjoy it on its own or pair it with your favorite recipes.",
        "Sourced from growers we have worked with for years.",
        "Every batch is tasted by our kitchen team before it ships.",
        "A pantry favorite for busy mornings and quiet evenings.",
        "Perfect for sharing with family and friends.",
    ),
    "fashion": (
        "Easy to pair with jeans, shorts or skirts for any occasion.",
        "Please check the size chart in the images before ordering.",
        "Designed for all day comfort at work, at home or on the go.",
        "A versatile piece for spring, summer, fall and winter outfits.",
        "Finished with careful stitching for a clean look.",
        "Makes a thoughtful present for birthdays and holidays.",
        "Our team answers every question within one business day.",
        "A wardrobe essential you will reach for again and again.",
    ),
    "electronics": (
        "Works with most popular phones, tablets and laptops.",
        "Backed by a one year warranty and friendly customer support.",
        "Simple setup gets you going in minutes.",
        "A compact design that fits easily in a bag or a pocket.",
        "Tested for safety and reliability before leaving the factory.",
        "A practical present for students, travelers and professionals.",
        "Please read the user manual before first use.",
        "Everything you need is included in the box.",
    ),
    "home": (
        "Adds a warm touch to bedrooms, living rooms and offices.",
        "Please allow slight differences in appearance due to screen settings.",
        "A thoughtful present for housewarmings, weddings and holidays.",
        "Easy to care for and built to last for years.",
        "Blends with modern, country and farmhouse interiors.",
        "Our support team answers every note within one business day.",
        "Arrives neatly packaged and ready to use.",
        "Makes everyday living a little more comfortable.",
    ),
}

#: How a bullet point states an attribute; ``{a}`` is the attribute phrase, ``{A}`` its title-cased form.
ATTRIBUTE_BULLETS: tuple[str, ...] = (
    "{A}: made with care so you can enjoy it every day.",
    "{A} - one of the reasons customers keep coming back.",
    "{A}. We checked every unit so you do not have to.",
    "{A}, just as promised on the label.",
    "{A} | {g}",
    "{A}: {g}",
    "{A} -- {g}",
)

#: Review titles and bodies (no attribute or option words); ``{noun}`` is the product type noun.
REVIEW_TITLES: tuple[str, ...] = ("Great value", "Works as described", "Pretty good", "Would buy again",
                                  "Not bad", "Exactly what I wanted", "Decent for the price", "Love it")
REVIEW_BODIES: tuple[str, ...] = (
    "This {noun} does the job and arrived quickly.",
    "I bought this {noun} for my sister and she uses it every day.",
    "Solid {noun} for the money, though the packaging could be better.",
    "Third time ordering this {noun}. No complaints so far.",
    "The {noun} looks just like the pictures. Happy with the purchase.",
    "It took a while to arrive, but the {noun} itself is fine.",
)

#: Ways a person opens a shopping request (WebShop's instructions open like these).
INSTRUCTION_OPENINGS: tuple[str, ...] = (
    "i need", "i am looking for", "i'm looking for", "i want", "find me", "i would like", "get me",
    "looking for", "i want to buy", "can you find me",
)
